"""The daemon's bounds, in process: the errno table, bounded messages and log lines,
tag names, the class cap, the stream admission and the idle watch."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

import pytest

from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag, check_name
from tokenbucket_daemon.core.scheduler import Request, Scheduler, SchedulerConfig
from tokenbucket_daemon.errors import (
    ERRNO_STATUS,
    MAX_MESSAGE,
    DaemonError,
    InvalidArgument,
    ResourceExhausted,
    errno_error,
)
from tokenbucket_daemon.server.backend import TierBackend
from tokenbucket_daemon.server.limits import Admission, FdGauge, IdleWatch, Limits, client_of
from tokenbucket_daemon.server.logbound import BoundedLog

# ---- errors ---------------------------------------------------------------------


def test_every_errno_has_a_status_and_only_daemon_bugs_are_internal():
    assert set(ERRNO_STATUS) == set(errno.errorcode)
    internal = {errno.errorcode[n] for n, (cls, _) in ERRNO_STATUS.items()
                if cls.code == "INTERNAL"}
    assert internal == {"EBADF", "EFAULT"}
    for name, code in [("ENAMETOOLONG", "INVALID_ARGUMENT"), ("ELOOP", "FAILED_PRECONDITION"),
                       ("EFBIG", "OUT_OF_RANGE"), ("EINVAL", "INVALID_ARGUMENT"),
                       ("EMFILE", "RESOURCE_EXHAUSTED"), ("EROFS", "PERMISSION_DENIED"),
                       ("EIO", "UNAVAILABLE"), ("ECHRNG", "FAILED_PRECONDITION")]:
        assert errno_error(getattr(errno, name))[0].code == code, name
    assert errno_error(None)[0].code == "FAILED_PRECONDITION"


def test_messages_are_bounded_whatever_the_value():
    e = InvalidArgument("bad path", "p" * (3 << 20), "shorten it")
    assert len(str(e)) <= MAX_MESSAGE and "3145728 chars" in str(e)
    e = DaemonError("x" * 10_000, b"b" * 10_000, "h" * 10_000)
    assert len(str(e)) <= MAX_MESSAGE + 30


def test_doc_table_lists_every_named_errno():
    doc = (os.path.dirname(__file__) + "/../../docs/errors.md")
    text = open(doc).read()
    from tokenbucket_daemon.errors import _TABLE
    for name, (cls, _) in _TABLE.items():
        assert f"| {name} | {cls.code} |" in text, name


# ---- logs -----------------------------------------------------------------------


def test_log_lines_are_cut_and_rate_limited_per_kind():
    now = [0.0]
    f = BoundedLog(burst=3, interval=1.0, clock=lambda: now[0])
    log = logging.getLogger("test_bounds.limited")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
    log.addHandler(Keep())
    log.addFilter(f)
    log.propagate = False
    for _ in range(100):
        log.warning("refused %r", "n" * 100_000)
    log.warning("another kind %d", 1)
    assert len(records) == 4                      # a burst of 3 of the first kind, 1 other
    assert all(len(r.getMessage()) < 400 for r in records)
    now[0] = 2.5
    log.warning("refused %r", "n")
    assert "[97 similar lines left out]" in records[-1].getMessage()


# ---- tags and classes -----------------------------------------------------------


def test_names_are_bounded_to_a_safe_set():
    for good in ("", "4242", "4242_7", "4242+1", "user:ana", "svc$", "ana@lab", "a" * 128):
        assert check_name("job_id", good) == good
    for bad in ("a" * 129, "a b", "a/b", "é", "a\0", "x\n"):
        with pytest.raises(InvalidArgument):
            check_name("job_id", bad)
    with pytest.raises(InvalidArgument):
        Tag(user="x" * 1000).checked()
    with pytest.raises(InvalidArgument):
        Policy(Selector(Kind.USER, "a b")).validated()


def test_classes_are_capped_idle_first_busy_refused():
    s = Scheduler(SchedulerConfig(max_classes=4))
    busy = [s.submit(Request(Tag(f"b{i}"), "t", "write", 4096), 0.0) for i in range(2)]
    s.poll(0.0)                                   # both in flight: their classes busy
    for i in range(2):
        r = Request(Tag(f"idle{i}"), "t", "meta", 0)
        s.submit(r, 1.0)
        s.poll(1.0)
        s.complete(r, 1.0 + i)
    # Full: the longest idle class goes for a new one.
    s.submit(Request(Tag("new"), "t", "meta", 0), 5.0)
    assert set(k[0] for k in s.classes()) >= {"b0", "b1", "new"} and \
        ("idle0", "t") not in s.classes()
    s.poll(5.0)
    s.submit(Request(Tag("more"), "t", "meta", 0), 6.0)        # evicts idle1, the last idle
    s.poll(6.0)
    with pytest.raises(ResourceExhausted) as e:
        s.submit(Request(Tag("most"), "t", "meta", 0), 6.0)    # every class busy now
    assert e.value.errno_name == "EAGAIN" and s.refused_classes == 1
    for r in busy:
        s.complete(r, 7.0)
    s.submit(Request(Tag("most"), "t", "meta", 0), 8.0)


def test_every_message_is_charged_at_least_min_charge():
    s = Scheduler(SchedulerConfig(min_charge=4096))
    for size, cost in ((0, 4096), (1, 4096), (4096, 4096), (65536, 65536)):
        r = Request(Tag("j"), "t", "write", size)
        s.submit_now(r, 0.0)
        assert r.cost == cost
        s.complete(r, 0.0)


# ---- paths ----------------------------------------------------------------------


def test_path_bounds(tmp_path):
    t = TierBackend("t", tmp_path)
    for path in ("x" * 4097, "x" * 256, "/".join(["d"] * 257), "é" * 2049):
        with pytest.raises(InvalidArgument) as e:
            t.stat(path)
        assert e.value.errno_name == "ENAMETOOLONG"
    t.max_depth = 3
    with pytest.raises(InvalidArgument):
        t.mkdir("a/b/c/d", parents=True)
    t.mkdir("a/b/c", parents=True)
    assert t.stat("a/b/c")["is_dir"]


def test_readdir_pages_bookmark_by_name(tmp_path):
    t = TierBackend("t", tmp_path)
    for i in range(10):
        t.create(f"f{i}")
    page, after = t.readdir_page("", max_entries=4)
    assert [e.name for e in page] == ["f0", "f1", "f2", "f3"] and after == "f3"
    t.unlink("f4")                                # gone between pages: nothing shifts
    page, after = t.readdir_page("", after, max_entries=4)
    assert [e.name for e in page] == ["f5", "f6", "f7", "f8"]
    page, after = t.readdir_page("", after, max_entries=4)
    assert ([e.name for e in page], after) == (["f9"], "")
    page, after = t.readdir_page("", "", max_entries=100, max_bytes=100)
    assert len(page) == 2 and after == "f1"


# ---- admission and idle streams ----------------------------------------------------


def test_client_of_drops_the_port():
    assert client_of("ipv4:10.0.0.5:4242") == "ipv4:10.0.0.5"
    assert client_of("ipv6:[::1]:50051") == "ipv6:[::1]"
    assert client_of("unix:/run/x.sock") == "unix:/run/x.sock"


class _Plenty(FdGauge):
    def __init__(self, free: int) -> None:
        super().__init__()
        self.left = free

    def free(self) -> int:
        return self.left


def test_admission_caps_streams_per_client_and_in_all_and_keeps_an_fd_reserve():
    a = Admission(Limits(max_streams=3, max_streams_per_client=2, fd_reserve=16),
                  _Plenty(1000))
    with a.stream("ipv4:1.1.1.1:1"), a.stream("ipv4:1.1.1.1:2"):
        with pytest.raises(ResourceExhausted) as e:
            with a.stream("ipv4:1.1.1.1:3"):
                pass
        assert e.value.errno_name == "EMFILE"
        with a.stream("ipv4:2.2.2.2:1"):
            with pytest.raises(ResourceExhausted):
                with a.stream("ipv4:3.3.3.3:1"):
                    pass
    assert a.open_streams == 0 and a.refused == 2
    a.fds.left = 10       # type: ignore[attr-defined]
    assert a.fds_short()
    with pytest.raises(ResourceExhausted):
        with a.stream("ipv4:4.4.4.4:1"):
            pass


def test_limits_are_checked():
    for bad in ({"fd_reserve": 1}, {"stream_idle_seconds": 0}, {"max_streams": -1},
                {"max_path_depth": 1.5}, {"io_stall_seconds": True}):
        with pytest.raises(InvalidArgument):
            Limits(**bad)


def test_idle_watch_cancels_only_while_waiting_on_the_caller():
    async def run() -> tuple[bool, bool]:
        async def worker(waits: list[float]) -> bool:
            w = IdleWatch(0.05)
            try:
                for wait in waits:
                    w.arm()
                    await asyncio.sleep(wait)       # the caller's next message
                    w.disarm()
                    await asyncio.sleep(0.1)        # our own work: not idleness
                return False
            except asyncio.CancelledError:
                return w.cancelled_by_me()
            finally:
                w.close()
        return await worker([0.01, 0.01, 0.01]), await worker([0.01, 0.5])
    assert asyncio.run(run()) == (False, True)
