"""What ``/metrics`` shows: HTTP answers, decisions, time to decision, waiters.

The figures are this process's (``countersign.metrics.Metrics``, a registry of
its own); Prometheus sums replicas. Decisions are counted by a
``ChangeListener`` in the process that made them, so each counts once.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from countersign.api.keys import METRICS
from countersign.core.model import ApprovalRequest
from countersign.metrics import Metrics

__all__ = ["DecisionMetrics", "http_metrics_middleware", "metrics_handler"]

# Long-polls last as long as the caller asks; they would drown the latency figures.
_UNTIMED_ROUTES = frozenset({"/v1/requests/{id}/wait"})


def _route_label(request: web.Request) -> str:
    # The route template, never the raw path: ids and junk URLs would explode the labels.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def http_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route, method and status; time the short ones."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # only when raised past the problem middleware
        status = exc.status
        raise
    finally:
        route = _route_label(request)
        metrics.http_requests.labels(route, request.method, str(status)).inc()
        if route not in _UNTIMED_ROUTES:
            metrics.http_latency.labels(route).observe(time.perf_counter() - started)


class DecisionMetrics:
    """A ``ChangeListener`` counting final states and how long people took."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def request_changed(self, request: ApprovalRequest) -> None:
        """Count ``request`` if it has just become final."""
        if not request.status.is_final:
            return
        self._metrics.decisions.labels(request.status.value).inc()
        # Requests the policy decided on creation did not wait for anyone.
        if request.decided_at is not None and request.decided_at > request.created_at:
            waited = (request.decided_at - request.created_at).total_seconds()
            self._metrics.time_to_decision.observe(waited)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
