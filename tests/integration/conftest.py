from __future__ import annotations

import pytest

from tokenbucket_daemon.etcdlocal import EtcdCluster


@pytest.fixture
def etcd(tmp_path_factory):
    """A fresh one-member etcd (TLS, client certificates, auth on) for a daemon group."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()
