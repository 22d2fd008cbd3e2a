"""The one TOML reader and the one set of typed-value checks every config type shares.

Every check appends one line to a `Problems` list instead of raising, so a file with eight bad fields is
reported in one go, eight lines, before anything runs. `Problems.raise_if_any` turns them into one
ConfigError whose message has one line per problem.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from dagmirror.errors import ConfigError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Problems(list[str]):
    """Every bad field found so far, one line each."""

    def raise_if_any(self) -> None:
        if self:
            raise ConfigError("\n".join(self))


def read_toml(path: Path, problems: Problems) -> dict[str, Any]:
    """The whole document, or {} with one line in `problems` when the file cannot be read or parsed."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: invalid TOML: {exc}")
    return {}


def type_name(typ: type) -> str:
    return "list of strings" if typ is list else typ.__name__


def is_type(value: object, typ: type) -> bool:
    """TOML's (and Python's) value as the field's type: an int is a float, a bool is never a number."""
    if isinstance(value, bool):
        return typ is bool
    if typ is float:
        return isinstance(value, (int, float))
    if typ is list:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, typ)


def typed(where: str, typ: type, value: object, problems: Problems) -> Any:
    """`value` as `typ` (ints become floats for float fields), or None with one line in `problems`."""
    if not is_type(value, typ):
        problems.append(f"{where}: expected {type_name(typ)}, got {value!r}")
        return None
    if typ is float:
        return float(value)  # type: ignore[arg-type]  # is_type checked: int or float
    if typ is list:
        return list(value)  # type: ignore[call-overload]  # is_type checked: list or tuple of str
    return value


def env_value(name: str, typ: type, raw: str, problems: Problems) -> Any:
    """A `DAGMIRROR_*` variable's text as `typ` (bool, list as comma-separated, or a scalar); a value that
    does not parse adds one line to `problems` and gives None, which callers treat as 'not given'."""
    value: object = None
    if typ is bool:
        value = True if raw.lower() in _TRUE else False if raw.lower() in _FALSE else None
    elif typ is list:
        value = [part.strip() for part in raw.split(",") if part.strip()]
    else:
        try:
            value = typ(raw)
        except ValueError:
            value = None
    if value is None:
        problems.append(f"{name}: expected {typ.__name__}, got {raw!r}")
    return value


def in_range(where: str, value: object, low: float, high: float, problems: Problems) -> bool:
    """Whether a number lies in [low, high]; NaN and infinities never do (unless `high` is infinite)."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not math.isnan(value)
        and low <= value <= high
    )
    if not ok:
        problems.append(f"{where}: must be between {low:g} and {high:g}, got {value!r}")
    return ok
