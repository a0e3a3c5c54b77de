"""Run a real qosfs mount as a child process (tests, benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


class LocalMount:
    """``qosfs mount TIER MOUNTPOINT --daemons ... --foreground`` in a child process."""

    def __init__(self, tier: str, mountpoint: Path, daemons: list[str], *args: str,
                 log: Path | None = None) -> None:
        self.tier, self.mountpoint, self.daemons = tier, Path(mountpoint), list(daemons)
        self.args = list(args)
        self.log = log or self.mountpoint.with_name(self.mountpoint.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LocalMount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "qosfs.cli", "mount", self.tier, str(self.mountpoint),
                 "--daemons", ",".join(self.daemons), "--foreground", *self.args],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        # Mounted is not ready: the read-ahead is set after FUSE's INIT, and the mount
        # says "mounted" (in this start's part of the log) only once that is done.
        while not (os.path.ismount(self.mountpoint) and self._says_mounted(start)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qosfs did not mount {self.mountpoint}: "
                                   f"{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def _says_mounted(self, start: int) -> bool:
        with open(self.log, "rb") as f:
            f.seek(start)
            return b"qosfs: mounted" in f.read()

    @property
    def pid(self) -> int:
        """The process id (after ``start``)."""
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> int | None:
        """Unmount (as ``qosfs umount`` does) and wait for the mount process to exit."""
        if os.path.ismount(self.mountpoint):
            subprocess.run([sys.executable, "-m", "qosfs.cli", "umount", str(self.mountpoint)],
                           capture_output=True, timeout=timeout)
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
            return self.proc.wait(timeout=timeout)

    def __enter__(self) -> LocalMount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
