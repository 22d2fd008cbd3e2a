"""Logging set-up: JSON lines (orjson) for machines, readable text for people on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from dagmirror.errors import printable

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any `extra=` fields; tracebacks as a field."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc |= {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """For people on a terminal: `12:00:00 dagmirror INFO [analytics]: pass: ...`. The mapping a line is
    about is shown, so the passes of two mappings can be told apart; other `extra=` fields are not."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s dagmirror %(levelname)s%(where)s: %(message)s", "%H:%M:%S")
        self.converter = time.localtime

    def format(self, record: logging.LogRecord) -> str:
        mapping = getattr(record, "mapping", None)
        shown = logging.makeLogRecord(record.__dict__)  # a copy: other handlers see the record unchanged
        shown.where = f" [{mapping}]" if mapping else ""
        # the message may carry a server's or the bucket's words: one printable line (tracebacks, -vv, follow)
        shown.msg, shown.args = printable(record.getMessage()), None
        return super().format(shown)


def setup_logging(verbose: int, *, json_lines: bool | None = None) -> None:
    """WARNING by default, INFO with -v, DEBUG with -vv. JSON lines unless stderr is a terminal."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger("dagmirror")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
