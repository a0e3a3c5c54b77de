"""Paths and errnos: a 3 MB name once grew the log by 648 MB in 108 Stat calls, unmapped
errnos came back INTERNAL, a path 25,000 deep ran the daemon out of descriptors."""

from __future__ import annotations

import os

import grpc

from tokenbucket_daemon.proto import qos_pb2 as pb

from .conftest import open_fds, status_of

TOO_LONG = (grpc.StatusCode.INVALID_ARGUMENT, "ENAMETOOLONG")


def test_a_huge_name_is_refused_with_a_short_status_and_a_bounded_log(daemon):
    huge = "n" * (3 << 20)
    before = daemon.log_bytes()
    for _ in range(108):
        code, details, err = status_of(daemon.data.Stat,
                                       pb.StatRequest(tier="ram", path=huge), timeout=20)
        assert (code, err) == TOO_LONG
        assert len(details) <= 1024
    # Nothing per call reaches the log: a few lines at most, never the name.
    assert daemon.log_bytes() - before < 16 * 1024


def test_path_length_name_length_and_depth_are_bounded(daemon):
    for path in ("a/" * 2100, "x" * 256, "d/" * 257 + "f"):
        assert status_of(daemon.data.Stat, pb.StatRequest(tier="disk", path=path),
                         timeout=20)[::2] == TOO_LONG, len(path)
    # Within the bounds: 255-byte names, 4096 bytes, 256 levels are fine.
    daemon.data.Mkdir(pb.MkdirRequest(tier="disk", path="/".join(["d"] * 256),
                                      parents=True), timeout=20)
    assert daemon.data.Stat(pb.StatRequest(tier="disk", path="d"), timeout=20).is_dir
    assert status_of(daemon.data.Stat, pb.StatRequest(tier="disk", path="y" * 255),
                     timeout=20)[0] == grpc.StatusCode.NOT_FOUND


def test_mkdir_25000_deep_is_refused_without_using_descriptors(daemon):
    fds = len(open_fds(daemon.pid))
    code, _, err = status_of(daemon.data.Mkdir, pb.MkdirRequest(
        tier="disk", path="/".join(["d"] * 25_000), parents=True), timeout=20)
    assert (code, err) == TOO_LONG
    assert not (daemon.base / "disk" / "d").exists()
    assert len(open_fds(daemon.pid)) <= fds + 8


def test_symlinks_cannot_lead_deeper_than_the_bound(daemon):
    disk = daemon.base / "disk"
    chain = "/".join(["e"] * 300)          # made beside the daemon, deeper than it walks
    (disk / chain).mkdir(parents=True)
    os.symlink(chain, disk / "deep")
    fds = len(open_fds(daemon.pid))
    assert status_of(daemon.data.Stat, pb.StatRequest(tier="disk", path="deep"),
                     timeout=20)[::2] == TOO_LONG
    assert len(open_fds(daemon.pid)) <= fds + 8
    os.symlink("loop", disk / "loop")
    assert status_of(daemon.data.Stat, pb.StatRequest(tier="disk", path="loop/x"),
                     timeout=20)[::2] == (grpc.StatusCode.FAILED_PRECONDITION, "ELOOP")


def test_errnos_that_were_internal_have_their_status(daemon):
    data = daemon.data
    data.Mkdir(pb.MkdirRequest(tier="disk", path="dir"), timeout=20)
    # A directory moved into itself: EINVAL.
    assert status_of(data.Rename, pb.RenameRequest(tier="disk", src="dir", dst="dir/in"),
                     timeout=20)[::2] == (grpc.StatusCode.INVALID_ARGUMENT, "EINVAL")
    # Past the largest offset: EFBIG, before the kernel is asked.
    chunk = pb.WriteChunk(tier="disk", path="big", offset=(1 << 63) - 2, data=b"xyz")
    assert status_of(data.Write, iter([chunk]), timeout=20)[::2] == \
        (grpc.StatusCode.OUT_OF_RANGE, "EFBIG")
    data.Create(pb.CreateRequest(tier="disk", path="f"), timeout=20)
    code, _, err = status_of(data.Truncate, pb.TruncateRequest(tier="disk", path="f",
                                                               size=(1 << 63) - 1), timeout=20)
    assert (code, err) in ((grpc.StatusCode.OUT_OF_RANGE, "EFBIG"),
                           (grpc.StatusCode.INVALID_ARGUMENT, "EINVAL"))
