"""A small HTTP client for the Countersign API, standard library only.

Used by ``countersign request`` / ``countersign history`` in pipelines; importable
without the server's dependencies. Retries connection errors and 5xx answers
with back-off; a create carries an ``Idempotency-Key`` so a retried create never
makes two requests.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FINAL_STATUSES", "ApiError", "Client", "backoff", "endpoint", "quote_segment"]

FINAL_STATUSES = frozenset({"approved", "denied", "expired", "cancelled"})


@dataclass
class ApiError(Exception):
    """The API answered with an error (``problem`` is its problem+json body), or not at all."""

    status: int
    title: str
    detail: str = ""
    problem: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        head = f"{self.status} {self.title}" if self.status else self.title
        return f"{head}: {self.detail}" if self.detail else head


class Client:
    """Synchronous client; ``url`` and ``token`` default to COUNTERSIGN_URL / COUNTERSIGN_TOKEN."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        self.url, self._token = endpoint(url, token)
        self.timeout = timeout
        self.retries = retries

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        all_headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            **(headers or {}),
        }
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(  # noqa: S310 (the URL is the operator's)
                self.url + path, data=data, method=method, headers=all_headers
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout or self.timeout) as resp:  # noqa: S310
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                problem = _problem(exc)
                if exc.code < 500 or attempt == self.retries:
                    raise ApiError(
                        exc.code,
                        str(problem.get("title", exc.reason)),
                        str(problem.get("detail", "")),
                        problem,
                    ) from None
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,  # a connection cut mid-answer (IncompleteRead, ...)
            ) as exc:
                if attempt == self.retries:
                    raise ApiError(0, f"cannot reach {self.url}", str(exc)) from None
            time.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def request(self, **fields: Any) -> dict[str, Any]:
        """Create a request (``action``, ``resource``, ``reason``, ``params``, ...)."""
        key = str(fields.pop("idempotency_key", None) or uuid.uuid4())
        body = {k: v for k, v in fields.items() if v is not None}
        result: dict[str, Any] = self._call(
            "POST", "/v1/requests", body, headers={"Idempotency-Key": key}
        )
        return result

    def get(self, request_id: str) -> dict[str, Any]:
        """One request."""
        result: dict[str, Any] = self._call("GET", f"/v1/requests/{quote_segment(request_id)}")
        return result

    def wait(self, request_id: str, timeout: float) -> dict[str, Any]:
        """The request once final, or as it is when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            step = int(max(0, min(60, left)))
            result: dict[str, Any] = self._call(
                "GET",
                f"/v1/requests/{quote_segment(request_id)}/wait?timeout={step}",
                timeout=step + self.timeout,
            )
            if result.get("status") in FINAL_STATUSES or left <= 1:
                return result

    def cancel(self, request_id: str, reason: str | None = None) -> dict[str, Any]:
        """Cancel a pending request this client created."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/requests/{quote_segment(request_id)}/cancel",
            {"reason": reason} if reason else {},
        )
        return result

    def jwks(self) -> dict[str, Any]:
        """The server's receipt public keys (``/.well-known/jwks.json``)."""
        result: dict[str, Any] = self._call("GET", "/.well-known/jwks.json")
        return result

    def history(self, limit: int = 50, **filters: str | None) -> Iterator[dict[str, Any]]:
        """Requests matching ``filters``, newest first, following cursors up to ``limit``."""
        cursor: str | None = None
        seen = 0
        while seen < limit:
            query = {k: v for k, v in filters.items() if v is not None}
            query["limit"] = str(min(200, limit - seen))
            if cursor:
                query["cursor"] = cursor
            page = self._call("GET", "/v1/requests?" + urllib.parse.urlencode(query))
            for item in page.get("items", []):
                seen += 1
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return


def endpoint(url: str | None, token: str | None) -> tuple[str, str]:
    """The server URL and bearer token, defaulting to COUNTERSIGN_URL / COUNTERSIGN_TOKEN."""
    url = url or os.environ.get("COUNTERSIGN_URL")
    token = token or os.environ.get("COUNTERSIGN_TOKEN")
    if not url:
        raise ApiError(0, "COUNTERSIGN_URL is not set")
    if not token:
        raise ApiError(0, "COUNTERSIGN_TOKEN is not set")
    return url.rstrip("/"), token


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt``: 0.25 s doubling to 8 s, jittered down to half."""
    return float(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2))  # noqa: S311


def quote_segment(segment: str) -> str:
    """``segment`` safe as one path segment (an id never becomes a path)."""
    return urllib.parse.quote(segment, safe="")


def _problem(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return {}
    return body if isinstance(body, dict) else {}
