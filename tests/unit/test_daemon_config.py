"""Bad daemon configuration and sizes: one line naming the value, nothing started."""

from __future__ import annotations

import pytest

from tokenbucket_daemon.errors import InvalidArgument
from tokenbucket_daemon.ior import main as ior_main
from tokenbucket_daemon.server.config import config_from_dict
from tokenbucket_daemon.units import parse_rate, parse_size


@pytest.fixture
def base(tmp_path):
    (tmp_path / "ram").mkdir()
    return tmp_path


@pytest.mark.parametrize("raw,needle", [
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "colour": 1}, "unknown key: 'colour'"),
    ({"state_dir": "s"}, "no [tiers]"),
    ({"state_dir": "s", "tiers": {"ram": "nowhere"}}, "tier ram is not a directory"),
    ({"state_dir": "s", "tiers": {"a-b": "ram"}}, "bad tier name: 'a-b'"),
    ({"tiers": {"ram": "ram"}}, "no state_dir"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "scheduler": {"max_in_flight": 0}},
     "max_in_flight must be at least 1"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "scheduler": {"k": 3}}, "bad [scheduler] key"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "scheduler": {"timer_slack": 0.5}},
     "timer_slack must be between 0 and 0.1 seconds"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "scheduler": {"group_size": 3}},
     "group_size is not set by hand"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "peer_interval": 5},
     "peer_interval must be 0.05 to 1 seconds"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "inline_memory_tiers": "no"},
     "inline_memory_tiers must be true or false: 'no'"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "qos": 0}, "qos must be true or false"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "tier_bandwidth": {"nvme": "1GB/s"}},
     "[tier_bandwidth] names a tier not in [tiers]: 'nvme'; use one of ram"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "tier_bandwidth": {"ram": "fast"}},
     "[tier_bandwidth] ram is not a rate: 'fast'"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "tier_bandwidth": {"ram": float("inf")}},
     "[tier_bandwidth] ram must be a rate above 0 and at most 1e+12 bytes/s: inf"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "tier_bandwidth": "100MB/s"},
     "tier_bandwidth must be a table"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "emulated_device": {"ram": 0}},
     "[emulated_device] ram must be a rate above 0"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "emulated_device": {"ram": "2TB/s"}},
     "[emulated_device] ram must be a rate above 0 and at most 1e+12 bytes/s"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "emulated_device": {"ram": "-5MB/s"}},
     "[emulated_device] ram is not a rate: '-5MB/s'"),
    ({"state_dir": "s", "tiers": {"ram": "ram"}, "scheduler": {"tier_burst_seconds": 5}},
     "tier_burst_seconds must be between 0.001 and 1"),
])
def test_bad_config_is_one_line_and_creates_nothing(base, raw, needle):
    with pytest.raises(InvalidArgument) as e:
        config_from_dict(raw, base=base, source="d.toml")
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (base / "s").exists()


def test_admin_token_file_must_be_private_and_non_empty(base):
    cfg = config_from_dict({"state_dir": "s", "tiers": {"ram": "ram"},
                            "admin_token_file": "tok", "insecure": True}, base=base)
    tok = base / "tok"
    tok.write_text("sekrit\n")
    tok.chmod(0o644)
    with pytest.raises(InvalidArgument, match="readable by others"):
        cfg.admin_token()
    tok.chmod(0o600)
    assert cfg.admin_token() == "sekrit"
    tok.write_text("")
    with pytest.raises(InvalidArgument, match="is empty"):
        cfg.admin_token()


def test_tier_bandwidth_and_emulated_device_take_numbers_and_rate_strings(base):
    cfg = config_from_dict({"state_dir": "s", "tiers": {"ram": "ram"}, "insecure": True,
                            "tier_bandwidth": {"ram": "100MB/s"},
                            "emulated_device": {"ram": 200 * 2**20}}, base=base)
    assert cfg.tier_bandwidth == {"ram": 100e6}
    assert cfg.emulated_device == {"ram": float(200 * 2**20)}
    plain = config_from_dict({"state_dir": "s", "tiers": {"ram": "ram"}, "insecure": True},
                             base=base)
    assert (plain.tier_bandwidth, plain.emulated_device) == ({}, {})


def test_sizes_and_rates():
    assert parse_size("64KiB") == 65536 and parse_size("1MB") == 1_000_000
    assert parse_rate("200MiB/s") == 200 * 2**20 and parse_rate("0") == 0
    for bad in ("64 parsecs", "-5MB", "fast"):
        with pytest.raises(ValueError, match="bad size"):
            parse_size(bad)


def test_qos_ior_refuses_bad_sizes(capsys):
    assert ior_main(["--daemon", "127.0.0.1:1", "--tier", "ram", "--transfer", "64QB"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad size '64QB'" in err
    assert ior_main(["--daemon", "127.0.0.1:1", "--tier", "ram", "--transfer", "3MiB",
                     "--block", "4MiB"]) == 1
    assert "block must be a multiple of transfer" in capsys.readouterr().err
    assert ior_main(["--daemon", "127.0.0.1:1", "--tier", "ram", "--rate", "fast"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad rate 'fast'" in err


def test_group_size_counts_this_daemon_and_its_peers(base):
    cfg = config_from_dict({"state_dir": "s", "tiers": {"ram": "ram"},
                            "peers": ["h1:1", "h2:1", "h3:1"], "insecure": True}, base=base,
                           source="d.toml")
    assert cfg.scheduler.group_size == 4


def test_scope_is_stored_and_an_old_table_gains_the_column(tmp_path):
    import sqlite3

    from tokenbucket_daemon.core.policy import Kind, Policy, Scope, Selector
    from tokenbucket_daemon.server.store import PolicyStore
    db = tmp_path / "p.sqlite"
    old = sqlite3.connect(db)      # the schema before group-scope limits
    old.execute("CREATE TABLE policy (kind INTEGER NOT NULL, value TEXT NOT NULL, tier TEXT "
                "NOT NULL, limit_bps REAL NOT NULL, reservation_bps REAL NOT NULL, weight REAL "
                "NOT NULL, burst_bytes INTEGER NOT NULL, updated_ns INTEGER NOT NULL, origin "
                "TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (kind, value, "
                "tier))")
    old.execute("INSERT INTO policy VALUES (1, 'a', '', 5.0, 0, 1, 0, 1, 'd', 0)")
    old.commit()
    old.close()
    st = PolicyStore(db)
    st.save(Policy(Selector(Kind.JOB, "b"), limit_bps=9.0, updated_ns=2, scope=Scope.GROUP))
    st.close()
    live, revision = PolicyStore(db).load()
    assert [(p.selector.value, p.scope) for p in live] == [("a", Scope.DAEMON),
                                                           ("b", Scope.GROUP)]
    assert revision == 0


ETCD = {"endpoints": ["127.0.0.1:2379", "10.0.0.9:2379"], "ca": "ca.pem", "cert": "d.pem",
        "key": "d.key"}


def test_an_etcd_table_points_a_group_at_its_store(base):
    raw = {"state_dir": "s", "tiers": {"ram": "ram"}, "insecure": True}
    assert config_from_dict(raw, base=base).etcd is None          # alone: SQLite only
    cfg = config_from_dict(raw | {"etcd": ETCD | {"keepalive": 1}}, base=base)
    assert cfg.etcd is not None and cfg.etcd.endpoints == ETCD["endpoints"]
    assert cfg.etcd.ca == (base / "ca.pem").resolve() and cfg.etcd.prefix == "/qos/v1/"
    assert cfg.etcd.keepalive == 1.0 and cfg.etcd.timeout == 3.0


@pytest.mark.parametrize("etcd", [
    {"endpoints": ["127.0.0.1:2379"]},                       # no certificate
    ETCD | {"endpoints": []}, ETCD | {"endpoints": ["no-port"]},
    ETCD | {"prefix": "qos"}, ETCD | {"keepalive": 0.01}, ETCD | {"timeout": True},
    ETCD | {"password": "x"}])
def test_a_bad_etcd_table_is_refused_in_one_line(base, etcd):
    raw = {"state_dir": "s", "tiers": {"ram": "ram"}, "insecure": True, "etcd": etcd}
    with pytest.raises(InvalidArgument, match=r"\[etcd\]") as e:
        config_from_dict(raw, base=base, source="d.toml")
    assert "\n" not in str(e.value)
