"""A longer fuzzing run of a live daemon than the test suite's: random (not derandomized)
malformed and extreme messages for every DataPlane and AdminService rpc, from
tests/security/fuzzing.py, for about ``--seconds``. Prints how many cases ran per rpc
and status, what it found (INTERNAL, UNKNOWN, or no answer within the call's deadline),
and the daemon's health, memory and descriptors before and after; writes
benchmarks/security/fuzz.json. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/security/fuzz.py [--seconds 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security import fuzzing
from tests.security.conftest import TOKEN, start

OUT = Path(__file__).resolve().with_name("fuzz.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--batch", type=int, default=200, help="cases per rpc per round")
    args = ap.parse_args(argv)
    rpcs = fuzzing.rpcs()
    counts: Counter[tuple[str, str]] = Counter()
    found: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = start(Path(tmp), "fuzz")
        try:
            fuzzing.seed(d.base)
            before = {"rss_kib": fuzzing.rss_kib(d.pid), "fds": fuzzing.fd_count(d.pid)}
            t0 = time.monotonic()
            rounds = 0
            while time.monotonic() - t0 < args.seconds:
                rounds += 1
                for rpc in rpcs:
                    if time.monotonic() - t0 >= args.seconds:
                        break
                    _round(d, rpc, args.batch, counts, found)
            after = {"rss_kib": fuzzing.rss_kib(d.pid), "fds": fuzzing.fd_count(d.pid),
                     "serving": d.serving(), "data_serving": d.serving("qos.v1.DataPlane"),
                     "alive": d.local.proc is not None and d.local.proc.poll() is None,
                     "log_bytes": d.log_bytes()}
        finally:
            d.stop()
    total = sum(counts.values())
    result: dict[str, Any] = {
        "seconds": round(time.monotonic() - t0, 1), "rounds": rounds, "cases": total,
        "by_rpc_and_status": {f"{r} {c}": n for (r, c), n in sorted(counts.items())},
        "findings": found, "before": before, "after": after}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{total} cases in {result['seconds']} s ({rounds} rounds over {len(rpcs)} rpcs)")
    print(f"{'rpc':34} {'status':22} {'cases':>7}")
    for (r, c), n in sorted(counts.items()):
        print(f"{r:34} {c:22} {n:7}")
    print(f"findings: {len(found)}")
    for f in found[:20]:
        print(f"  {f['rpc']}: {f['status']} for {f['request']}")
    print(f"before: {before}")
    print(f"after:  {after}")
    return 1 if found or not after["alive"] or after["serving"] != 1 else 0


def _round(d: Any, rpc: fuzzing.Rpc, n: int, counts: Counter[tuple[str, str]],
           found: list[dict[str, str]]) -> None:
    raw = st.binary(min_size=1, max_size=300)
    raws = st.lists(raw, min_size=1, max_size=3) if rpc.method.client_streaming else raw
    # One request in ten is raw bytes, the rest messages at extremes.
    cases = st.one_of(rpc.requests(), rpc.requests(), raws)

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=cases, token=st.sampled_from([TOKEN, TOKEN, TOKEN, None, "wrong"]))
    def one(request: Any, token: str | None) -> None:
        code = fuzzing.call(d.chan, rpc, request, token)
        counts[(rpc.name, code.name)] += 1
        if code in fuzzing.FAILED:
            found.append({"rpc": rpc.name, "status": code.name,
                          "request": f"{request!r:.300}"})
    one()


if __name__ == "__main__":
    raise SystemExit(main())
