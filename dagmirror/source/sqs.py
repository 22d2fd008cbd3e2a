"""The `EventQueue` over aioboto3: ReceiveMessage (long polling) and DeleteMessageBatch on one SQS queue.
One of the modules that import the AWS SDK; every SDK exception leaves as a dagmirror SourceError."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError

from dagmirror.config import redact_url
from dagmirror.errors import SourceConfigError, SourceError, printable
from dagmirror.source._translate import RequestCounter, Translator, first_line
from dagmirror.source.credentials import sdk_session
from dagmirror.source.queue import QueueMessage
from dagmirror.source.sdk import sdk_error

# https://sqs.<region>.amazonaws.com/<account>/<name> (and the legacy <region>.queue.amazonaws.com)
_AWS_QUEUE = re.compile(r"^https://(?:sqs\.)?([a-z0-9-]+)\.(?:queue\.)?amazonaws\.com(?:\.cn)?/")
_MARGIN = 10.0  # the read timeout is the long poll's wait plus this


class _QueueTranslator(Translator):
    """Errors name the queue, not an S3 bucket."""

    __slots__ = ()

    def where(self, op: str, target: str) -> str:
        return f"{op} {redact_url(target)} at {self.endpoint}"


def queue_region(queue_url: str) -> str | None:
    """The region an AWS queue URL names (None for other URLs: a local server's, say)."""
    match = _AWS_QUEUE.match(queue_url)
    return match.group(1) if match else None


class SqsQueue:
    def __init__(self, client: Any, queue_url: str, stack: AsyncExitStack) -> None:
        self._client = client
        self._url = queue_url
        self._stack = stack
        endpoint = redact_url(str(client.meta.endpoint_url))
        self._translator = _QueueTranslator("", endpoint, RequestCounter(), sdk_error)

    @classmethod
    async def open(
        cls,
        queue_url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        wait: float = 20.0,
    ) -> SqsQueue:
        """`endpoint_url` None: the SDK's own resolution ($AWS_ENDPOINT_URL_SQS, $AWS_ENDPOINT_URL, the
        config file, else AWS); the region is the queue URL's when it is an AWS one."""
        stack = AsyncExitStack()
        session = sdk_session(profile, queue_region(queue_url) or region)
        config = Config(
            connect_timeout=5,
            read_timeout=wait + _MARGIN,
            retries={"total_max_attempts": 1},  # the trigger's own backoff owns every retry
        )
        try:
            client = await stack.enter_async_context(
                session.client("sqs", endpoint_url=endpoint_url, config=config)
            )
        except BotoCoreError as exc:
            await stack.aclose()
            raise SourceConfigError(f"cannot create SQS client: {first_line(exc)}") from None
        return cls(client, queue_url, stack)

    async def receive(self, *, max_messages: int, wait: float, visibility: float) -> list[QueueMessage]:
        async with self._translator.request("ReceiveMessage", self._url, wait + _MARGIN):
            resp = await self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=round(wait),
                VisibilityTimeout=round(visibility),
            )
        self._translator.counter.add("ReceiveMessage")
        return [
            QueueMessage(str(m["MessageId"]), str(m["ReceiptHandle"]), str(m.get("Body", "")))
            for m in resp.get("Messages", ())
        ]

    async def delete(self, receipts: Sequence[str]) -> None:
        if not receipts:
            return
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)]
        async with self._translator.request("DeleteMessageBatch", self._url, _MARGIN):
            resp = await self._client.delete_message_batch(QueueUrl=self._url, Entries=entries)
        self._translator.counter.add("DeleteMessageBatch")
        # A handle that is no longer valid (the message was delivered again meanwhile) fails alone; the
        # message then comes back and is deleted after the next pass, so only a wholesale failure raises.
        failed = resp.get("Failed", ())
        if failed and len(failed) == len(entries):
            first = failed[0]
            code = printable(str(first.get("Code", "")), 64)
            message = printable(str(first.get("Message", "")), 300)
            raise SourceError(
                f"DeleteMessageBatch {redact_url(self._url)}: {code}: {message}",
                transient=not first.get("SenderFault", False),
                code=code,
            )

    def request_counts(self) -> dict[str, int]:
        return self._translator.counter.snapshot()

    async def aclose(self) -> None:
        await self._stack.aclose()
