"""Real daemons for the security tests: started by LocalDaemon, with extra [scheduler]
and [limits] keys, and their output drained (and kept) so a test can bound it and a
daemon that logs much never blocks on a full pipe."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenbucket_daemon.client import channel
from tokenbucket_daemon.local import LocalDaemon
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc

TOKEN = "security-admin-token"
ADMIN_MD = (("authorization", f"Bearer {TOKEN}"),)


class Daemon:
    """A started LocalDaemon, its output collected by a thread, stubs at hand."""

    def __init__(self, local: LocalDaemon) -> None:
        self.local = local
        self.output: list[str] = []
        proc = local.proc
        assert proc is not None and proc.stdout is not None
        self._reader = threading.Thread(target=self._drain, args=(proc.stdout,), daemon=True)
        self._reader.start()
        self.chan = channel(local.address)
        self.data = rpc.DataPlaneStub(self.chan)
        self.admin = rpc.AdminServiceStub(self.chan)
        self.health = health_pb2_grpc.HealthStub(self.chan)

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.output.append(line)

    @property
    def address(self) -> str:
        return self.local.address

    @property
    def pid(self) -> int:
        return self.local.pid

    @property
    def base(self) -> Path:
        return self.local.base

    def log_bytes(self) -> int:
        return sum(len(line) for line in self.output)

    def serving(self, service: str = "") -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                 timeout=10).status

    def stop(self) -> None:
        proc = self.local.proc
        self.chan.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
        self._reader.join(timeout=10)


def start(base: Path, name: str = "s", scheduler: dict[str, Any] | None = None,
          limits: dict[str, Any] | None = None, **kw: Any) -> Daemon:
    local = LocalDaemon(base, name, token=TOKEN, **kw)
    cfg = base / "d.toml"
    text = cfg.read_text()
    extra = "".join(f"{k} = {_toml(v)}\n" for k, v in (scheduler or {}).items())
    # [scheduler] holds max_request; its other keys go right after that line.
    head, sep, rest = text.partition("[scheduler]\n")
    line, nl, tail = rest.partition("\n")
    text = f"{head}{sep}{line}{nl}{extra}{tail}"
    if limits:
        text += "[limits]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in limits.items())
    cfg.write_text(text)
    return Daemon(local.start())


def _toml(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else repr(v)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(name: str = "s", **kw: Any) -> Daemon:
        d = start(tmp_path / name, name, **kw)
        started.append(d)
        return d
    yield make
    for d in started:
        d.stop()


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory()


def status_of(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[grpc.StatusCode, str, str]:
    """The status code, details and qos-errno of a call that must fail."""
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    err = e.value
    md = dict(err.trailing_metadata() or ())
    return err.code(), err.details() or "", str(md.get("qos-errno", ""))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> list[str]:
    """Where each of the process's descriptors points."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(str(fd.readlink()))
        except OSError:
            continue
    return out


def wait_until(cond: Callable[[], bool], tries: int = 600) -> None:
    """Poll ``cond`` every 50 ms until it holds (at most ``tries`` times)."""
    pause = threading.Event()
    for _ in range(tries):
        if cond():
            return
        pause.wait(0.05)
    raise AssertionError("condition never met")
