"""Prometheus metrics of one API worker process.

With several worker processes (granian prefork) the `serve` command points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start; every worker then
writes its samples there and /metrics, answered by any worker, aggregates all of them. Without
it (tests, a single process) the app's own registry is served.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "http_requests_total", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=r,
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "HTTP request latency by route template",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.query_seconds = Histogram(
            "db_query_duration_seconds",
            "Database call latency (acquire + statement) by shard, role and statement name",
            ["shard", "role", "query"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.query_errors = Counter(
            "db_query_errors_total", "Database calls that failed, by shard, role, statement name and kind",
            ["shard", "role", "query", "kind"], registry=r,
        )
        self.read_routing = Counter(
            "db_reads_total", "Reads by shard and where they were served from and why",
            ["shard", "served_by", "reason"], registry=r,
        )
        self.pool_connections = Gauge(
            "db_pool_connections", "Pool connections by shard, role and state (summed over workers)",
            ["shard", "role", "state"], multiprocess_mode="livesum", registry=r,
        )
        self.freshness_mark_failures = Counter(
            "freshness_mark_failures_total",
            "Read-your-writes markers Redis did not take (the key is read from the primary meanwhile)",
            registry=r,
        )
        self.replica_lag_seconds = Gauge(
            "db_replica_lag_seconds", "Replica replay lag as this worker's monitor sees it",
            ["shard"], multiprocess_mode="livemax", registry=r,
        )
        # The outbox relay's state per shard, read from the shards when /metrics is scraped
        # (so any worker answers with fresh numbers; the most recent write wins across workers).
        self.outbox_pending = Gauge(
            "outbox_pending_events", "Undelivered, not dead, events in the shard's outbox",
            ["shard"], multiprocess_mode="mostrecent", registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "outbox_oldest_pending_age_seconds", "Age of the shard's oldest undelivered event",
            ["shard"], multiprocess_mode="mostrecent", registry=r,
        )
        self.outbox_dead = Gauge(
            "outbox_dead_letters", "Events parked after too many failed attempts (see messenger check)",
            ["shard"], multiprocess_mode="mostrecent", registry=r,
        )
        self.outbox_scrape_errors = Counter(
            "outbox_backlog_read_errors_total", "Scrapes that could not read a shard's outbox",
            ["shard"], registry=r,
        )
        self.cache_hits = Counter(
            "cache_hits_total", "Read-cache lookups answered from this worker's cache", ["cache"], registry=r,
        )
        self.cache_misses = Counter(
            "cache_misses_total", "Read-cache lookups that went to the database", ["cache"], registry=r,
        )
        self.cache_evictions = Counter(
            "cache_evictions_total", "Read-cache entries dropped for room (least recently used)",
            ["cache"], registry=r,
        )
        self.cache_invalidations = Counter(
            "cache_invalidations_total", "Read-cache keys dropped because they were written (here or elsewhere)",
            ["cache"], registry=r,
        )

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: the label lookup takes a lock and hashes every
        time, and the hot path asks for the same few children again and again."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
