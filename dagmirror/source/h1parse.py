"""HTTP/1.1 answers parsed incrementally for source/h1.py: the head, then the body by its framing
(Content-Length, chunked with trailers, or the end of the connection), every bound checked as bytes arrive.
Pure: bytes in, an Answer or an error out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dagmirror.source._wire import BodyTooLarge

MAX_HEAD = 64 << 10  # status line and headers; S3's are about 1 KiB
_NO_BODY = (204, 304)


class ProtocolError(ConnectionError):
    """The server's bytes are not HTTP/1.1 as spoken here: the connection is dropped (transient)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """`body`: most bytes a 2xx body may have (None: no bound); `error`: most bytes of any other answer's body
    kept (the rest is not read and the connection is dropped); `what`: the bound's name in errors."""

    body: int | None
    error: int
    what: str


class Parser:
    """One answer, parsed incrementally: head, then the body by its framing."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._mode = "head"  # head | length | chunked | trailers | close | done
        self._remaining = 0  # length: bytes still to come; chunked: of the current chunk
        self._cap: int | None = None  # most body bytes kept
        self._truncate = False  # an error body: stop at the cap, drop the connection
        self._body = bytearray()
        self.untouched = True
        self.reusable = False

    def feed(self, data: bytes) -> Answer | None:
        self.untouched = False
        self._buf += data
        while True:
            if self._mode == "head":
                if not self._head():
                    return None
            elif self._mode == "length":
                return self._take_length()
            elif self._mode == "chunked":
                if not self._take_chunks():
                    return None
            elif self._mode == "trailers":
                if not self._trailers():
                    return None
            elif self._mode == "close":
                self._take_all()
                return self.answer() if self._mode == "done" else None
            if self._mode == "done":
                return self.answer()

    def at_close(self) -> bool:
        return self._mode == "close"

    def answer(self) -> Answer:
        return Answer(self._status, self._headers, bytes(self._body))

    # -- head ------------------------------------------------------------------------------------------------
    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"answer head larger than {MAX_HEAD} bytes")
            return False
        if end > MAX_HEAD:
            raise ProtocolError(f"answer head larger than {MAX_HEAD} bytes")
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        version, status = _status_line(lines[0])
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            return True
        self._status, self._headers = status, _headers(lines[1:])
        self._frame(version)
        return True

    def _frame(self, version: str) -> None:
        headers, limits = self._headers, self._limits
        ok = 200 <= self._status < 300
        self._cap = limits.body if ok else limits.error
        self._truncate = not ok
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if self._status in _NO_BODY:
            self._mode, self.reusable = "done", keep_alive
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode, self._remaining, self.reusable = "chunked", -1, keep_alive
        elif "content-length" in headers:
            self._remaining = _content_length(headers["content-length"])
            if ok and self._cap is not None and self._remaining > self._cap:
                raise BodyTooLarge(f"Content-Length {self._remaining} exceeds {limits.what} {self._cap}")
            self._mode, self.reusable = "length", keep_alive
        else:
            self._mode = "close"

    # -- bodies ----------------------------------------------------------------------------------------------
    def _take_length(self) -> Answer | None:
        take = min(self._remaining, len(self._buf))
        self._keep(self._buf[:take])
        del self._buf[:take]
        self._remaining -= take
        if self._mode == "done":  # an error body cut at its cap: answered now, the rest is never read
            return self.answer()
        if self._remaining:
            return None
        self._mode = "done"
        self.reusable = self.reusable and not self._buf  # bytes after the body: not an answer we know
        return self.answer()

    def _take_all(self) -> None:
        self._keep(self._buf)
        self._buf.clear()

    def _take_chunks(self) -> bool:
        """False: more bytes are needed; True: the last chunk and trailers were read (mode "done")."""
        while True:
            if self._remaining < 0:  # at a chunk-size line
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise ProtocolError("chunk-size line too long")
                    return False
                size = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                del self._buf[: end + 2]
                if self._remaining == 0:
                    return self._trailers()
            take = min(self._remaining, len(self._buf))
            self._keep(self._buf[:take])
            del self._buf[:take]
            self._remaining -= take
            if self._mode == "done":  # cut at its cap (an error body)
                return True
            if self._remaining or len(self._buf) < 2:
                return False
            if self._buf[:2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            del self._buf[:2]
            self._remaining = -1

    def _trailers(self) -> bool:
        """After the last chunk: no trailers (CRLF) or trailer lines up to an empty line."""
        self._mode = "trailers"
        if self._buf.startswith(b"\r\n"):
            del self._buf[:2]
        else:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise ProtocolError("chunked trailers too large")
                return False
            del self._buf[: end + 4]
        self._mode = "done"
        self.reusable = self.reusable and not self._buf
        return True

    def _keep(self, data: bytes | bytearray) -> None:
        cap = self._cap
        if cap is not None and len(self._body) + len(data) > cap:
            if not self._truncate:
                raise BodyTooLarge(f"body exceeds {self._limits.what} {cap}")
            self._body += data[: cap - len(self._body)]
            self._mode, self.reusable = "done", False  # the rest is never read: drop the connection
            return
        self._body += data


def _status_line(line: str) -> tuple[str, int]:
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:60]!r}")
    return parts[0], int(parts[1])


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:60]!r}")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _content_length(value: str) -> int:
    first = value.split(",", maxsplit=1)[0].strip()  # a repeated identical Content-Length was joined above
    if not first.isdigit() or any(v.strip() != first for v in value.split(",")):
        raise ProtocolError(f"bad Content-Length {value[:40]!r}")
    return int(first)
