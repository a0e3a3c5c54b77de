"""Bad input to the entry points added with the multi-node cluster and mutual TLS: one
line, and nothing started or mounted."""

from __future__ import annotations

from pathlib import Path

import pytest

from qos_plugin.slurm.localcluster import main as local_main
from qosfs.cli import main as qosfs_main


@pytest.mark.parametrize("args, needle", [
    (["--nodes", "0"], "--nodes 0: give 1 to 16"),
    (["--nodes", "17"], "--nodes 17: give 1 to 16"),
    (["--daemons", "0"], "--daemons 0: give 1 or more"),
])
def test_deploy_local_refuses_bad_counts_before_starting_anything(tmp_path: Path, capsys,
                                                                  args, needle):
    root = tmp_path / "cluster"
    assert local_main(["up", "--dir", str(root), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not root.exists()


@pytest.mark.parametrize("tls, needle", [
    (["--ca", "/nonexistent/ca.pem"], "--ca, --cert and --key go together"),
    (["--ca", "/nonexistent/ca.pem", "--cert", "/x.pem", "--key", "/x.key"],
     "cannot read the TLS CA file"),
])
def test_qosfs_refuses_an_incomplete_or_unreadable_identity(tmp_path: Path, capsys, tls,
                                                             needle):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert qosfs_main(["mount", "pfs", str(mnt), "--daemons", "127.0.0.1:1", *tls]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not mnt.is_mount()
