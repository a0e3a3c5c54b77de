"""Prometheus metrics, read from the scheduler at scrape time (no per-request cost).

Scrapes are served from prometheus_client's HTTP thread; the scheduler belongs to the
event loop, so the collector asks the loop for a snapshot instead of reading it from
the other thread (a class created or evicted mid-scrape would race).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tokenbucket_daemon.server.service import Node


async def _snapshot(node: Node) -> tuple[list[Any], dict[str, tuple[int, int]], int]:
    sched = node.gate.scheduler
    return (sched.stats(node.gate.now()),
            {n: (c.bytes_read, c.bytes_written) for n, c in node.counters.items()},
            sched.in_flight)


class NodeCollector(Collector):
    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats, counters, in_flight = asyncio.run_coroutine_threadsafe(
            _snapshot(self.node), self.loop).result(timeout=10)
        labels = ["job", "tier"]
        b = CounterMetricFamily("qos_class_bytes", "Bytes released per job and tier",
                                labels=[*labels, "op"])
        r = CounterMetricFamily("qos_class_requests", "Requests released", labels=labels)
        w = CounterMetricFamily("qos_class_wait_seconds", "Time requests waited in queue",
                                labels=labels)
        q = GaugeMetricFamily("qos_class_queue_depth", "Requests waiting", labels=labels)
        t = GaugeMetricFamily("qos_class_tokens", "Tokens (bytes) in the bucket", labels=labels)
        lim = GaugeMetricFamily("qos_class_limit_bytes_per_second", "Limit in force",
                                labels=labels)
        for s in stats:
            lv = [s.job or "default", s.tier]
            b.add_metric([*lv, "read"], s.bytes_read)
            b.add_metric([*lv, "write"], s.bytes_written)
            r.add_metric(lv, s.requests)
            w.add_metric(lv, s.wait_seconds_total)
            q.add_metric(lv, s.queued)
            t.add_metric(lv, s.tokens)
            lim.add_metric(lv, s.limit_bps)
        tb = CounterMetricFamily("qos_tier_bytes", "Bytes served per tier", labels=["tier", "op"])
        for name, (read, written) in counters.items():
            tb.add_metric([name, "read"], read)
            tb.add_metric([name, "write"], written)
        inflight = GaugeMetricFamily("qos_in_flight", "Requests in flight")
        inflight.add_metric([], in_flight)
        # A bool read from this thread is safe; an alert on 0 catches a daemon left
        # with enforcement switched off after an incident.
        on = GaugeMetricFamily("qos_enforcing", "1 while policies are enforced, 0 while "
                               "requests bypass the scheduler")
        on.add_metric([], float(self.node.gate.enabled))
        # The daemon's bounds (server/limits.py): an alert on serving 0 or on refusals
        # growing catches a hung tier, a descriptor leak or a client over its share.
        node = self.node
        serving = GaugeMetricFamily("qos_serving", "1 while the daemon can serve data (see "
                                    "docs/errors.md, Health), 0 otherwise")
        serving.add_metric([], 0.0 if node.health_problem() else 1.0)
        streams = GaugeMetricFamily("qos_data_streams", "Write and Read streams open")
        streams.add_metric([], node.admission.open_streams)
        refused = CounterMetricFamily("qos_refused", "Calls refused at a bound",
                                      labels=["bound"])
        refused.add_metric(["streams_or_fds"], node.admission.refused)
        refused.add_metric(["classes"], node.gate.scheduler.refused_classes)
        yield from (b, r, w, q, t, lim, tb, inflight, on, serving, streams, refused)


def start_metrics(node: Node, port: int, loop: asyncio.AbstractEventLoop) -> int:
    """Serve /metrics on 127.0.0.1:``port`` (0 = any free port); returns the port."""
    reg = CollectorRegistry()
    reg.register(NodeCollector(node, loop))
    server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
    return int(server.server_port)
