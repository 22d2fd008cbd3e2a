"""A small evaluator of IAM policy documents (pure), for checking the policies dagmirror writes.

It answers what AWS's policy evaluation logic answers for one request against a set of policies (identity
and resource policies of one account): an explicit Deny wins, then any Allow, else an implicit deny. It
covers the parts of the policy language dagmirror's policies use, and refuses (UnsupportedPolicy) anything
else rather than guess: Action/NotAction, Resource/NotResource with `*` and `?` wildcards, Principal `*`
or {"AWS": [...]} in resource policies, and the condition operators StringEquals, StringNotEquals,
StringLike, StringNotLike and Bool, each also with `IfExists`.

Missing condition keys follow AWS's rules: a positive operator is false, a negated one (StringNot*) is
true, and `...IfExists` is true. Why not moto: moto's IAM enforcement ignores Resource conditions' keys
(s3:prefix never reaches it) and treats a failed condition on an Allow as a Deny."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

Decision = Literal["allow", "deny", "implicit-deny"]
_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "Bool")


class UnsupportedPolicy(ValueError):
    """The policy uses something this evaluator does not implement."""


@dataclass(frozen=True)
class Request:
    action: str  # e.g. "s3:GetObject"
    resource: str  # e.g. "arn:aws:s3:::bucket/dags/production/a.py"
    context: Mapping[str, str] = field(default_factory=dict)  # e.g. {"s3:prefix": "dags/production/"}
    principal: str = "arn:aws:iam::123456789012:role/dagmirror"


def evaluate(policies: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    allowed = False
    for doc in policies:
        for statement in _statements(doc):
            if not _applies(statement, request):
                continue
            if statement["Effect"] == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit-deny"


def allows(policies: Iterable[Mapping[str, Any]], request: Request) -> bool:
    return evaluate(policies, request) == "allow"


def _statements(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = doc.get("Statement", [])
    statements = [statements] if isinstance(statements, Mapping) else list(statements)
    for s in statements:
        if s.get("Effect") not in ("Allow", "Deny"):
            raise UnsupportedPolicy(f"statement {s.get('Sid')!r}: Effect must be Allow or Deny")
    return statements


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    return (
        _matches_element(statement, "Action", request.action, case=False)
        and _matches_element(statement, "Resource", request.resource, case=True)
        and _principal_matches(statement, request.principal)
        and _conditions_hold(statement.get("Condition", {}), request.context)
    )


def _matches_element(statement: Mapping[str, Any], name: str, value: str, *, case: bool) -> bool:
    if name in statement and f"Not{name}" in statement:
        raise UnsupportedPolicy(f"statement {statement.get('Sid')!r} has both {name} and Not{name}")
    if name in statement:
        return any(_like(p, value, case=case) for p in _values(statement[name]))
    if f"Not{name}" in statement:
        return not any(_like(p, value, case=case) for p in _values(statement[f"Not{name}"]))
    raise UnsupportedPolicy(f"statement {statement.get('Sid')!r} has no {name}")


def _principal_matches(statement: Mapping[str, Any], principal: str) -> bool:
    if "NotPrincipal" in statement:
        raise UnsupportedPolicy("NotPrincipal is not supported")
    if "Principal" not in statement:  # an identity policy: its principal is whoever it is attached to
        return True
    given = statement["Principal"]
    if given == "*":
        return True
    if not isinstance(given, Mapping) or set(given) - {"AWS"}:
        raise UnsupportedPolicy(f"principal {given!r}: only '*' and {{'AWS': ...}} are supported")
    return any(p in ("*", principal) for p in _values(given["AWS"]))


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    """Every operator, every key under it (AND); any value of a key (OR)."""
    for operator, keys in conditions.items():
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS:
            raise UnsupportedPolicy(f"condition operator {operator!r} is not supported")
        for key, expected in keys.items():
            actual = _context_value(context, key)
            if actual is None:
                if operator.endswith("IfExists") or base.startswith("StringNot"):
                    continue
                return False
            if not _condition(base, _values(expected), actual):
                return False
    return True


def _context_value(context: Mapping[str, str], key: str) -> str | None:
    """Condition keys are case-insensitive."""
    lowered = {k.lower(): v for k, v in context.items()}
    return lowered.get(key.lower())


def _condition(operator: str, expected: Sequence[str], actual: str) -> bool:
    if operator == "StringEquals":
        return actual in expected
    if operator == "StringNotEquals":
        return actual not in expected
    if operator == "StringLike":
        return any(_like(p, actual, case=True) for p in expected)
    if operator == "StringNotLike":
        return not any(_like(p, actual, case=True) for p in expected)
    return actual.lower() in (v.lower() for v in expected)  # Bool


def _values(value: Any) -> list[str]:
    values = [value] if isinstance(value, (str, bool)) else list(value)
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


def _like(pattern: str, value: str, *, case: bool) -> bool:
    """IAM wildcards: `*` any run of characters (including '/'), `?` one character; nothing else is
    special (`[`, `.`... are escaped)."""
    if "${" in pattern:
        raise UnsupportedPolicy(f"policy variables are not supported: {pattern!r}")
    return _compiled(pattern, case).fullmatch(value) is not None


@cache
def _compiled(pattern: str, case: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (0 if case else re.IGNORECASE))
