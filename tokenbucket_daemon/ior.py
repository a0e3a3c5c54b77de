"""``qos-ior``: an IOR-like load generator for tokenbucketd.

Each stream writes (or reads) files of ``--block`` bytes in ``--transfer``-sized
requests, one after another, for ``--duration`` seconds, against one or more
daemons (streams are spread over them round robin); ``--rate`` paces them to an
offered load instead of as fast as they go. A block counts when the
daemon acknowledged it (the write reached the tier, or the read arrived), in the
second it completed; the report is bandwidth per second and the steady-state
mean over the seconds after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field

from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.core.policy import Tag
from tokenbucket_daemon.heap import keep_buffers_in_heap
from tokenbucket_daemon.units import parse_rate, parse_size

MB = 1e6


@dataclass
class IorResult:
    per_second: list[float] = field(default_factory=list)   # bytes/s in each second
    steady_bps: float = 0.0
    total_bytes: int = 0
    seconds: float = 0.0


def run_ior(addresses: list[str], tier: str, tag: Tag, transfer: int, block: int,
            streams: int, duration: float, op: str = "write", warmup: float = 2.0,
            prefix: str = "ior", rate_bps: float = 0.0) -> IorResult:
    """Run the load; ``rate_bps`` > 0 offers that many bytes/s in all, each stream
    starting its k-th block no earlier than k blocks at its share of the rate."""
    lock = threading.Lock()
    buckets: dict[int, int] = {}
    stop_at = time.monotonic() + duration
    t0 = time.monotonic()
    payload = b"\xa5" * transfer
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        client = DataClient(addresses[i % len(addresses)], tag)
        name = f"{prefix}-{tag.job or 'untagged'}-{i}"
        try:
            if op == "read":     # a file to read back, written once before the clock
                client.write_chunks(tier, name, (payload for _ in range(block // transfer)))
            k = 0
            started = time.monotonic()
            while time.monotonic() < stop_at:
                if rate_bps > 0:
                    # Paced from the stream's start, not from the last block: a late
                    # block is caught up, so the offered load stays the rate asked.
                    due = started + k * block * streams / rate_bps
                    if due > stop_at:
                        break
                    time.sleep(max(0.0, due - time.monotonic()))
                if op == "write":
                    client.write_chunks(tier, name, (payload for _ in range(block // transfer)))
                else:
                    for _ in client.read_chunks(tier, name, 0, block, transfer):
                        pass
                done = time.monotonic()
                if done > stop_at:
                    break
                with lock:
                    sec = int(done - t0)
                    buckets[sec] = buckets.get(sec, 0) + block
                k += 1
        except BaseException as e:       # reported by the caller, not lost in a thread
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    n = int(duration)
    per = [float(buckets.get(s, 0)) for s in range(n)]
    steady = per[int(warmup):] or per
    return IorResult(per, sum(steady) / len(steady), sum(buckets.values()),
                     time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qos-ior", description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", action="append", required=True, help="HOST:PORT (repeatable)")
    ap.add_argument("--tier", required=True)
    ap.add_argument("--job", default="", help="job tag (empty: untagged)")
    ap.add_argument("--user", default="")
    ap.add_argument("--transfer", default="64KiB", help="request size, e.g. 64KiB")
    ap.add_argument("--block", default="4MiB", help="bytes per file written or read")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds left out of the mean")
    ap.add_argument("--rate", default="0", help="offered load of all streams, e.g. 200MB/s "
                    "(default 0: as fast as they go)")
    ap.add_argument("--read", action="store_true", help="read instead of write")
    ap.add_argument("--prefix", default="ior", help="file names start with this")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        transfer, block = parse_size(a.transfer), parse_size(a.block)
        rate = parse_rate(a.rate)
    except ValueError as e:
        print(f"qos-ior: error: {e}", file=sys.stderr)
        return 1
    if block % transfer or a.streams < 1 or a.duration <= a.warmup:
        print("qos-ior: error: block must be a multiple of transfer, streams >= 1 and "
              f"duration > warmup (got {block}, {transfer}, {a.streams}, {a.duration})",
              file=sys.stderr)
        return 1
    keep_buffers_in_heap()
    r = run_ior(a.daemon, a.tier, Tag(a.job, a.user), transfer, block, a.streams, a.duration,
                "read" if a.read else "write", a.warmup, a.prefix, rate)
    if a.json:
        print(json.dumps({"per_second_MBps": [x / MB for x in r.per_second],
                          "steady_MBps": r.steady_bps / MB, "bytes": r.total_bytes}))
    else:
        for s, x in enumerate(r.per_second):
            print(f"{s:4d} s {x / MB:10.2f} MB/s")
        print(f"steady (after {a.warmup:g} s): {r.steady_bps / MB:.2f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
