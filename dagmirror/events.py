"""S3 event notifications as data (pure): what a queue message says changed, which mirrored prefixes it
concerns, and which messages a successful pass has covered.

Two formats reach an SQS queue: S3's own notification (`{"Records": [{"eventSource": "aws:s3", ...}]}`,
keys form-encoded: "red flower.py" arrives as "red+flower.py"), optionally wrapped in an SNS envelope when
S3 -> SNS -> SQS fans one bucket out to many queues, and EventBridge's (`{"source": "aws.s3",
"detail-type": "Object Created", "detail": {...}}`, keys as they are). Anything else is *foreign*; a body that
is not JSON, or an S3 event without a bucket or key, is *malformed*. Neither is ever an exception: an event
only wakes a pass early, and the periodic poll stays the backstop, so a message we cannot read costs nothing
but a count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

import orjson

from dagmirror.manifest import pointer_key

Kind = Literal["s3", "eventbridge", "setup", "foreign", "malformed"]
# What became of a message, for dagmirror_events_total{result}.
Result = Literal["matched", "unrelated", "duplicate", "setup", "foreign", "malformed"]
MAX_BODY = 256 * 1024  # SQS's own limit: a longer body did not come from S3


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    bucket: str
    key: str  # decoded: the key as S3 stores it
    name: str  # "ObjectCreated:Put" (S3 format) or "Object Created" (EventBridge)


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: Kind
    events: tuple[ObjectEvent, ...] = ()
    reason: str = ""  # why a message is foreign or malformed, for the debug log


@dataclass(frozen=True, slots=True)
class Watch:
    """One mirrored prefix: the keys whose change should wake its mapping. `mode` is the mapping's: a
    releases mirror cares only for its pointer, an objects mirror only for keys under its prefix."""

    mapping: str
    bucket: str
    prefix: str  # '' or ending in '/'
    mode: str = "auto"

    def concerns(self, event: ObjectEvent) -> bool:
        if event.bucket != self.bucket:
            return False
        if self.mode != "objects" and event.key == pointer_key(self.prefix):
            return True
        return self.mode != "releases" and event.key.startswith(self.prefix)


def parse_message(body: str | bytes) -> Parsed:
    """One queue message body -> its object events, or why it has none. Never raises."""
    if len(body) > MAX_BODY:
        return Parsed("malformed", reason=f"body of {len(body)} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Parsed("malformed", reason=f"not JSON: {exc}")
    return _document(doc)


def _document(doc: Any) -> Parsed:
    if not isinstance(doc, dict):
        return Parsed("foreign", reason=f"a JSON {type(doc).__name__}, not an object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_message(doc["Message"])  # S3 -> SNS -> SQS without raw message delivery
    if doc.get("Event") == "s3:TestEvent":  # sent once when a notification is configured
        return Parsed("setup")
    if "Records" in doc:
        return _s3_records(doc["Records"])
    if doc.get("source") == "aws.s3" and "detail" in doc:
        return _eventbridge(doc)
    return Parsed("foreign", reason=f"keys {sorted(doc)[:5]}")


def _s3_records(records: Any) -> Parsed:
    if not isinstance(records, list) or not records:
        return Parsed("malformed", reason="'Records' is not a non-empty list")
    events: list[ObjectEvent] = []
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") not in {"aws:s3", "minio:s3"}:
            return Parsed("foreign", reason="a record that is not from S3")
        bucket = _path(record, "s3", "bucket", "name")
        key = _path(record, "s3", "object", "key")
        if not isinstance(bucket, str) or not isinstance(key, str) or not bucket:
            return Parsed("malformed", reason="an S3 record without s3.bucket.name or s3.object.key")
        events.append(ObjectEvent(bucket, unquote_plus(key), str(record.get("eventName", ""))))
    return Parsed("s3", tuple(events))


def _eventbridge(doc: dict[str, Any]) -> Parsed:
    bucket = _path(doc, "detail", "bucket", "name")
    key = _path(doc, "detail", "object", "key")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket:
        return Parsed("malformed", reason="an EventBridge S3 event without detail.bucket.name or object.key")
    return Parsed("eventbridge", (ObjectEvent(bucket, key, str(doc.get("detail-type", ""))),))


def _path(doc: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(name)
    return doc


def route(parsed: Parsed, watches: Iterable[Watch]) -> frozenset[str]:
    """The mappings a message concerns (none for a setup, foreign or malformed one)."""
    return frozenset(w.mapping for w in watches for e in parsed.events if w.concerns(e))


_KIND_RESULTS: dict[Kind, Result] = {"setup": "setup", "foreign": "foreign", "malformed": "malformed"}


def result_of(parsed: Parsed, mappings: frozenset[str]) -> Result:
    return _KIND_RESULTS.get(parsed.kind) or ("matched" if mappings else "unrelated")


@dataclass
class _Waiting:
    receipt: str
    after: dict[str, int]  # mapping -> passes it had started when the message came: a later one covers it


@dataclass
class Inbox:
    """Messages received and not yet deleted. A message may be deleted once every mapping it concerns has
    completed a pass that *started* after it arrived: a pass already running may have read the pointer (or
    the listing) before the change. Duplicates (the same message id delivered again after its visibility
    timeout) only refresh the receipt handle, so they neither wake a mapping twice nor get lost."""

    _waiting: dict[str, _Waiting] = field(default_factory=dict)

    def add(self, message_id: str, receipt: str, started: Mapping[str, int]) -> bool:
        """Note a message concerning `started`'s mappings; False when it was already waiting."""
        known = self._waiting.get(message_id)
        if known is not None:
            known.receipt = receipt
            return False
        self._waiting[message_id] = _Waiting(receipt, dict(started))
        return True

    def covered(self, mapping: str, pass_number: int) -> list[str]:
        """The receipts of the messages a successful pass (numbered from 1) of `mapping` completed; they
        leave the inbox."""
        done: list[str] = []
        for message_id, waiting in list(self._waiting.items()):
            after = waiting.after.get(mapping)
            if after is not None and pass_number > after:
                del waiting.after[mapping]
            if not waiting.after:
                done.append(waiting.receipt)
                del self._waiting[message_id]
        return done

    def __len__(self) -> int:
        return len(self._waiting)
