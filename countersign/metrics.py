"""Prometheus metrics of one server process, on a registry of its own (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """The figures ``/metrics`` serves; one instance per application."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "countersign_http_requests_total",
            "HTTP requests answered, by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "countersign_http_request_seconds",
            "Time to answer an HTTP request (long-polls excluded).",
            ["route"],
            registry=self.registry,
        )
        self.requests_created = Counter(
            "countersign_requests_created_total",
            "Approval requests created, by the status they started in.",
            ["status"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "countersign_decisions_total",
            "Requests that reached a final state, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.time_to_decision = Histogram(
            "countersign_time_to_decision_seconds",
            "From creation to final state, for requests that waited for people.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 86400),
            registry=self.registry,
        )
        self.callback_attempts = Counter(
            "countersign_callback_attempts_total",
            "Callback delivery attempts, by result (delivered, failed, refused, dead).",
            ["result"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "countersign_outbox_pending",
            "Callbacks waiting to be delivered (sampled by the delivery worker).",
            registry=self.registry,
        )
        self.waiters = Gauge(
            "countersign_waiters",
            "Clients long-polling a request in this process.",
            registry=self.registry,
        )
