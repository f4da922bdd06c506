"""``@require_approval``: a function runs only after people approve its exact arguments.

The call's arguments become the request's ``params``. On approval the receipt is
verified against the server's JWKS for the params about to be executed (the
approvers' edit, if one won) and the function runs once with them; otherwise a
typed ``ApprovalError`` is raised (or, for denials, a message returned).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal, ParamSpec, TypeVar, cast

from countersign.agent.client import ApiError, AsyncClient, Client
from countersign.agent.receipts import Keys, verify_receipt
from countersign.agent.types import (
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalError,
    ApprovalExpired,
    ApprovalTimeout,
    Decision,
)

__all__ = ["Gate", "require_approval"]

P = ParamSpec("P")
R = TypeVar("R")

Text = str | Callable[..., str]
OnDenied = Literal["raise", "message"]
TIMED_OUT = "timed out waiting for approval"


class Gate:
    """What ``require_approval`` needs at call time; shared by the sync and async paths."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        action: str,
        resource: Text,
        reason: Text,
        timeout: float,
        exclude: Sequence[str],
        issuer: str | None,
        jwks: Keys | None,
        cancel_on_timeout: bool,
        on_denied: OnDenied,
        request_fields: Mapping[str, Any],
    ) -> None:
        self.fn = fn
        self.signature = inspect.signature(fn)
        self.action = action
        self.resource = resource
        self.reason = reason
        self.timeout = timeout
        self.exclude = frozenset(exclude)
        self.issuer = issuer
        self.jwks = jwks
        self.cancel_on_timeout = cancel_on_timeout
        self.on_denied = on_denied
        self.request_fields = dict(request_fields)

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Prepared:
        """Bind a call: its params (as JSON sends them) and the request's texts."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        params = self.params_of(bound)
        resource = self.resource(**params) if callable(self.resource) else self.resource
        reason = self.reason(**params) if callable(self.reason) else self.reason
        return Prepared(bound, params, str(resource), str(reason))

    def params_of(self, bound: inspect.BoundArguments) -> dict[str, Any]:
        """A bound call's params, as JSON sends them (what is digested and approved)."""
        params: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if name in self.exclude:
                continue
            if kind is inspect.Parameter.VAR_KEYWORD:
                params.update(value)
            else:
                params[name] = value
        try:
            # What the server stores and digests is the JSON form: compare like with like.
            loaded: dict[str, Any] = json.loads(json.dumps(params))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self.fn.__qualname__}: arguments must be JSON: {exc}") from exc
        return loaded

    def outcome(self, prepared: Prepared, decision: Decision) -> inspect.BoundArguments | str:
        """The arguments to run with once approved; raise (or a message) otherwise."""
        if decision.status == "denied":
            if self.on_denied == "message":
                return f"Not run: {decision.describe()}"
            raise ApprovalDenied(decision)
        if decision.status == "expired":
            raise ApprovalExpired(f"expired undecided: {decision.describe()}", decision)
        if decision.status == "cancelled":
            raise ApprovalCancelled(decision.describe(), decision)
        if decision.status != "approved":
            raise ApprovalTimeout(
                f"no decision on {decision.id} within {self.timeout:g}s", decision
            )
        approved = decision.approved_params
        assert approved is not None
        return self.rebind(prepared, approved)

    def rebind(self, prepared: Prepared, approved: Mapping[str, Any]) -> inspect.BoundArguments:
        """The call with the approved params in place of the requested ones."""
        if approved == prepared.params:
            return prepared.bound  # unedited: run with the caller's own objects
        named = {
            n: p
            for n, p in self.signature.parameters.items()
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        }
        var_kw = next(
            (n for n, p in self.signature.parameters.items() if p.kind is p.VAR_KEYWORD), None
        )
        arguments: dict[str, Any] = {}
        extra = {k: v for k, v in approved.items() if k not in named}
        if extra and var_kw is None:
            raise ApprovalError(
                f"approved params {sorted(extra)} are not arguments of {self.fn.__qualname__}"
            )
        for name, param in self.signature.parameters.items():
            if name in self.exclude:
                if name in prepared.bound.arguments:
                    arguments[name] = prepared.bound.arguments[name]
            elif param.kind is param.VAR_KEYWORD:
                arguments[name] = extra
            elif param.kind is param.VAR_POSITIONAL:
                arguments[name] = tuple(approved.get(name, ()))
            elif name in approved:
                arguments[name] = approved[name]
            elif param.default is param.empty:
                raise ApprovalError(f"approved params lack {name!r} of {self.fn.__qualname__}")
        bound = inspect.BoundArguments(self.signature, OrderedDict(arguments))
        bound.apply_defaults()
        return bound

    def check_receipt(
        self, prepared: Prepared, decision: Decision, bound: inspect.BoundArguments, jwks: Keys
    ) -> None:
        """Refuse unless the receipt is genuine and for exactly the call that will run."""
        verify_receipt(
            decision.receipt or "",
            jwks,
            self.action,
            self.params_of(bound),
            issuer=self.issuer,
            expected_resource=prepared.resource,
            expected_request_id=decision.id,
        )


class Prepared:
    """One bound call and what its request says."""

    def __init__(
        self, bound: inspect.BoundArguments, params: dict[str, Any], resource: str, reason: str
    ) -> None:
        self.bound = bound
        self.params = params
        self.resource = resource
        self.reason = reason


def require_approval(
    action: str,
    resource: Text,
    reason: Text,
    *,
    client: Client | AsyncClient | None = None,
    timeout: float = 600.0,
    on_denied: OnDenied = "raise",
    cancel_on_timeout: bool = True,
    exclude: Sequence[str] = ("self", "cls"),
    issuer: str | None = None,
    jwks: Keys | None = None,
    requested_by: str | None = None,
    context: Mapping[str, Any] | None = None,
    ttl_seconds: int | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated (sync or async) function only once Countersign approves the call.

    ``resource`` and ``reason`` are strings or callables given the call's
    arguments by name (accept ``**_`` for the ones you ignore). The arguments,
    except ``exclude``, are the request's ``params``; the function runs with the
    approved ones. ``on_denied="message"`` returns a one-line explanation instead
    of raising ``ApprovalDenied`` (for frameworks that hand tool results to a
    model; the function's declared return type does not include it). ``jwks``
    overrides where the receipt keys come from (default: the client's server).
    """
    fields = {"requested_by": requested_by, "context": context, "ttl_seconds": ttl_seconds}

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        gate = Gate(
            fn,
            action=action,
            resource=resource,
            reason=reason,
            timeout=timeout,
            exclude=exclude,
            issuer=issuer,
            jwks=jwks,
            cancel_on_timeout=cancel_on_timeout,
            on_denied=on_denied,
            request_fields=fields,
        )
        if inspect.iscoroutinefunction(fn):
            if isinstance(client, Client):
                raise TypeError(f"{fn.__qualname__} is async: pass an AsyncClient")
            return cast(Callable[P, R], _async_wrapper(gate, client))
        if isinstance(client, AsyncClient):
            raise TypeError(f"{fn.__qualname__} is not async: pass a Client")
        return cast(Callable[P, R], _sync_wrapper(gate, client))

    return decorate


def _sync_wrapper(gate: Gate, client: Client | None) -> Callable[..., Any]:
    @functools.wraps(gate.fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        api = client or Client()  # read the environment at call time, not import time
        prepared = gate.prepare(args, kwargs)
        decision = api.request(
            gate.action,
            prepared.resource,
            prepared.reason,
            prepared.params,
            **gate.request_fields,
        )
        if not decision.final:
            decision = api.wait(decision.id, gate.timeout)
        if not decision.final and gate.cancel_on_timeout:
            try:
                decision = _settle(decision, api.cancel(decision.id, TIMED_OUT))
            except ApiError as exc:
                if exc.status != HTTPStatus.CONFLICT:
                    raise
                decision = api.get(decision.id)  # decided while we gave up: honour that
        bound = gate.outcome(prepared, decision)
        if isinstance(bound, str):
            return bound
        gate.check_receipt(prepared, decision, bound, gate.jwks or api.jwks_url)
        return gate.fn(*bound.args, **bound.kwargs)

    return run


def _async_wrapper(gate: Gate, client: AsyncClient | None) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(gate.fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        api = client or AsyncClient()
        prepared = gate.prepare(args, kwargs)
        decision = await api.request(
            gate.action,
            prepared.resource,
            prepared.reason,
            prepared.params,
            **gate.request_fields,
        )
        if not decision.final:
            decision = await api.wait(decision.id, gate.timeout)
        if not decision.final and gate.cancel_on_timeout:
            try:
                decision = _settle(decision, await api.cancel(decision.id, TIMED_OUT))
            except ApiError as exc:
                if exc.status != HTTPStatus.CONFLICT:
                    raise
                decision = await api.get(decision.id)  # decided while we gave up: honour that
        bound = gate.outcome(prepared, decision)
        if isinstance(bound, str):
            return bound
        keys = gate.jwks or api.jwks_url
        # The JWKS fetch (cached) is blocking I/O: keep it off the event loop.
        await asyncio.to_thread(gate.check_receipt, prepared, decision, bound, keys)
        return await gate.fn(*bound.args, **bound.kwargs)

    return run


def _settle(waited: Decision, cancelled: Decision) -> Decision:
    """After a timeout: still undecided means timed out, not cancelled by someone."""
    if cancelled.status == "cancelled":
        return waited  # our own cancel: report the timeout
    return cancelled  # decided in the meantime: honour that
