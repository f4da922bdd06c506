"""`when` conditions: CEL expressions compiled once at load, evaluated per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import celpy
import celpy.celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

__all__ = ["VARIABLES", "Condition", "ConditionError", "ConditionSyntaxError", "compile_condition"]

VARIABLES = ("action", "resource", "reason", "params", "context", "requested_by", "client")
"""The names a `when` expression can use; each request supplies all of them."""

# CEL type names may appear as values (`type(x) == int`); they are not variables.
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "dyn", "int", "list", "map", "null_type", "string", "type", "uint"}
)
# Macros that bind their first argument as a loop variable (`xs.exists(x, x > 1)`).
_BINDING_MACROS = frozenset({"all", "exists", "exists_one", "filter", "map"})


class ConditionSyntaxError(ValueError):
    """A `when` text that is not a usable CEL expression; the message says where and why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"`{source}` {reason}")
        self.source = source
        self.reason = reason


class ConditionError(Exception):
    """A `when` expression that could not give true or false for one request."""


@dataclass(frozen=True)
class Condition:
    """A compiled `when` expression; `evaluate` it with the request's variables."""

    source: str
    program: Any = field(compare=False, repr=False)
    # The variables the expression mentions: converting the others to CEL values
    # (params and context can be large) is most of an evaluation's cost.
    reads: frozenset[str] = field(default=frozenset(VARIABLES), compare=False, repr=False)

    def evaluate(self, variables: Mapping[str, Any]) -> bool:
        """True or false for these variables; ConditionError for anything else."""
        try:
            activation = {
                name: json_to_cel(value) for name, value in variables.items() if name in self.reads
            }
            result = self.program.evaluate(activation)
        except CELEvalError as error:
            raise ConditionError(_eval_message(error)) from error
        except Exception as error:
            # celpy signals some failures with plain Python exceptions (a value it
            # cannot convert, an unsupported feature). To the policy they are all
            # "could not be evaluated", which the matcher treats conservatively.
            raise ConditionError(f"{type(error).__name__}: {error}") from error
        # celpy may hand an error back as a value instead of raising it.
        if isinstance(result, CELEvalError):
            raise ConditionError(_eval_message(result))
        if not isinstance(result, celpy.celtypes.BoolType):
            raise ConditionError(f"gave {_show(result)}, not true or false")
        return bool(result)


def compile_condition(source: str) -> Condition:
    """Parse a `when` expression once; ConditionSyntaxError if it cannot be used."""
    environment = _environment()
    try:
        ast = environment.compile(source)
    except CELParseError as error:
        raise ConditionSyntaxError(source, f"is not valid CEL: {_parse_message(error)}") from error
    unknown = sorted(_free_names(ast) - set(VARIABLES) - _TYPE_NAMES)
    if unknown:
        # CEL only notices an unknown name when it evaluates it, which would turn
        # a typo such as `param.rows` into an error on every request. Say it now.
        names = ", ".join(repr(name) for name in unknown)
        known = ", ".join(VARIABLES)
        noun = "name" if len(unknown) == 1 else "names"
        raise ConditionSyntaxError(source, f"uses unknown {noun} {names} (known: {known})")
    # Every identifier, loop variables included: a name both bound and read stays in.
    mentioned = {
        str(tree.children[0])
        for tree in ast.iter_subtrees()
        if tree.data in ("ident", "dot_ident") and tree.children
    }
    return Condition(
        source=source,
        program=environment.program(ast),
        reads=frozenset(mentioned) & frozenset(VARIABLES),
    )


@cache
def _environment() -> celpy.Environment:
    # Built on first use, not at import: creating it raises the recursion limit.
    return celpy.Environment()


def _free_names(ast: Any) -> set[str]:
    """Identifiers an expression reads from its environment (not macro loop variables)."""
    names: set[str] = set()
    bound: set[str] = set()
    for tree in ast.iter_subtrees():
        if tree.data in ("ident", "dot_ident"):
            names.add(str(tree.children[0]))
        elif tree.data == "member_dot_arg" and len(tree.children) == 3:
            _, method, arguments = tree.children
            if str(method) in _BINDING_MACROS and arguments.children:
                bound |= {
                    str(node.children[0])
                    for node in arguments.children[0].iter_subtrees()
                    if node.data == "ident"
                }
    return names - bound


def _parse_message(error: CELParseError) -> str:
    """A one-line reason from a CEL syntax error (celpy's own text spans lines)."""
    where = f" at column {error.column}" if error.column else ""
    cause = error.__context__
    token = getattr(cause, "token", None)
    char = getattr(cause, "char", None)
    if token is not None and getattr(token, "type", None) == "$END":
        return f"unexpected end of expression{where}"
    if token is not None:
        return f"unexpected {str(token)!r}{where}"
    if char is not None:
        return f"unexpected character {char!r}{where}"
    return f"syntax error{where}"


def _eval_message(error: CELEvalError) -> str:
    return str(error.args[0]) if error.args else type(error).__name__


def _show(value: object) -> str:
    if value is None:
        return "null"
    kind = type(value).__name__.removesuffix("Type").lower()
    if isinstance(value, dict | list):
        return f"a {kind}"
    shown = repr(str(value)) if isinstance(value, str) else str(value)
    return f"{shown} ({kind})"
