"""Prometheus metrics, read from the scheduler at scrape time (no per-request cost)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tokenbucket_daemon.server.service import Node


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        node = self.node
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
        now = node.gate.now()
        for s in node.gate.scheduler.stats(now):
            lv = [s.job or "default", s.tier]
            b.add_metric([*lv, "read"], s.bytes_read)
            b.add_metric([*lv, "write"], s.bytes_written)
            r.add_metric(lv, s.requests)
            w.add_metric(lv, s.wait_seconds_total)
            q.add_metric(lv, s.queued)
            t.add_metric(lv, s.tokens)
            lim.add_metric(lv, s.limit_bps)
        tb = CounterMetricFamily("qos_tier_bytes", "Bytes served per tier", labels=["tier", "op"])
        for name, c in node.counters.items():
            tb.add_metric([name, "read"], c.bytes_read)
            tb.add_metric([name, "write"], c.bytes_written)
        inflight = GaugeMetricFamily("qos_in_flight", "Requests in flight")
        inflight.add_metric([], node.gate.scheduler.in_flight)
        yield from (b, r, w, q, t, lim, tb, inflight)


def start_metrics(node: Node, port: int) -> int:
    reg = CollectorRegistry()
    reg.register(NodeCollector(node))
    server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
    return int(server.server_port)
