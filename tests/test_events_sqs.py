"""S3 event notifications through SQS, over HTTP: dagmirror/source/sqs.py against moto server (which serves
SQS on the same endpoint as S3), a real `dagmirror run --sqs-queue` process woken by the messages we send and
by moto's own S3 -> SQS notifications, and one end-to-end S3 -> SQS notification on LocalStack (opt-in).

Every daemon here polls once an hour (`--interval 3600`), so a pass after the first one can only have been
started by an event."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import orjson
import pytest

from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.servers import localstack_server, s3_client
from dagmirror.errors import SourceError
from dagmirror.manifest import pointer_key
from dagmirror.source.sqs import SqsQueue, queue_region

from .daemon import Daemon
from .helpers import read_tree, sdk_credentials
from .releases import publish

PREFIX = "dags/prod/"
V1 = {"team/a.py": b"a = 1\n", "team/b.py": b"b = 1\n"}
V2 = {**V1, "team/new.py": b"new = 2\n"}
V3 = {"team/a.py": b"a = 3\n", "team/new.py": b"new = 3\n"}
QUIET = ("--interval", "3600", "--jitter", "0")


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # loopback test servers accept any key
    )


@pytest.fixture
def queue(moto_endpoint: str) -> str:
    return str(
        sqs_client(moto_endpoint).create_queue(QueueName=f"dagmirror-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    )


def s3_event(bucket: str, key: str) -> str:
    """A message as S3 writes it to SQS: the key form-encoded."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key)},
        },
    }
    return orjson.dumps({"Records": [record]}).decode()


def in_queue(endpoint: str, url: str) -> int:
    """Messages not deleted yet, visible or being handled."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs_client(endpoint).get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


def daemon(bucket: str, dest: Path, endpoint: str, queue_url: str, *flags: str) -> Daemon:
    return Daemon(
        f"s3://{bucket}/{PREFIX}",
        dest,
        endpoint,
        *QUIET,
        "--sqs-queue",
        queue_url,
        "--sqs-endpoint-url",
        endpoint,
        *flags,
    )


def passes(d: Daemon, outcome: str = "ok") -> float:
    return d.metric("dagmirror_passes_total", mapping="default", outcome=outcome) or 0


# -- the SQS transport --


async def test_the_sqs_queue_receives_hides_and_deletes_over_http(moto_endpoint: str, queue: str) -> None:
    sqs_client(moto_endpoint).send_message(QueueUrl=queue, MessageBody="hello")
    with sdk_credentials():
        q = await SqsQueue.open(queue, endpoint_url=moto_endpoint, region="us-east-1", wait=1)
        try:
            [got] = await q.receive(max_messages=10, wait=1, visibility=30)
            assert got.body == "hello"
            assert await q.receive(max_messages=10, wait=0, visibility=30) == []  # hidden while handled
            assert in_queue(moto_endpoint, queue) == 1
            await q.delete([got.receipt])
            assert in_queue(moto_endpoint, queue) == 0
            assert q.request_counts() == {"ReceiveMessage": 2, "DeleteMessageBatch": 1}
        finally:
            await q.aclose()


async def test_a_missing_queue_is_a_dagmirror_error_naming_the_queue(moto_endpoint: str) -> None:
    missing = f"{moto_endpoint}/123456789012/no-such-queue"
    with sdk_credentials():
        q = await SqsQueue.open(missing, endpoint_url=moto_endpoint, region="us-east-1", wait=1)
        try:
            with pytest.raises(SourceError, match=r"ReceiveMessage .*no-such-queue"):
                await q.receive(max_messages=1, wait=0, visibility=30)
        finally:
            await q.aclose()


def test_the_region_of_an_aws_queue_url_is_its_own() -> None:
    assert queue_region("https://sqs.eu-west-1.amazonaws.com/123456789012/dags") == "eu-west-1"
    assert queue_region("https://eu-central-1.queue.amazonaws.com/123456789012/dags") == "eu-central-1"
    assert queue_region("http://127.0.0.1:4566/000000000000/dags") is None


# -- the daemon woken by events --


def test_an_event_wakes_a_pass_at_once_and_its_message_goes_after_it(
    s3: Any, bucket: str, moto_endpoint: str, queue: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, V1)
    dest = tmp_path / "dags"
    with daemon(bucket, dest, moto_endpoint, queue) as d:
        d.until(lambda: d.get("/readyz")[0] == 200, what="the first pass")
        assert read_tree(dest) == V1
        publish(s3, bucket, PREFIX, V2, seq=2)
        sqs_client(moto_endpoint).send_message(
            QueueUrl=queue, MessageBody=s3_event(bucket, pointer_key(PREFIX))
        )
        d.until(lambda: read_tree(dest) == V2, what="the release the event announced")
        d.until(lambda: in_queue(moto_endpoint, queue) == 0, what="the message deleted")
        assert d.metric("dagmirror_events_total", result="matched") == 1
        assert d.metric("dagmirror_events_deleted_total") == 1
        assert passes(d) == 2  # the first pass, and the one the event started


def test_duplicate_late_out_of_order_and_foreign_events_are_harmless(
    s3: Any, bucket: str, moto_endpoint: str, queue: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, V1)
    dest = tmp_path / "dags"
    sqs = sqs_client(moto_endpoint)
    pointer_event = s3_event(bucket, pointer_key(PREFIX))
    with daemon(bucket, dest, moto_endpoint, queue) as d:
        d.until(lambda: d.get("/readyz")[0] == 200, what="the first pass")
        publish(s3, bucket, PREFIX, V2, seq=2)
        publish(s3, bucket, PREFIX, V3, seq=3)
        # Three events for the pointer (two releases, then one twice), one for a file of another prefix,
        # one foreign and one malformed message, all at once and in no particular order.
        bodies = [
            pointer_event,
            pointer_event,
            pointer_event,
            s3_event(bucket, "dags/staging/x.py"),
            '{"hello": "world"}',
            "not json",
        ]
        sqs.send_message_batch(
            QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        )
        d.until(lambda: in_queue(moto_endpoint, queue) == 0, what="every message deleted or dropped")
        assert read_tree(dest) == V3  # the newest release, whatever order the events came in
        sqs.send_message(QueueUrl=queue, MessageBody=pointer_event)  # a late duplicate of an old event
        d.until(lambda: in_queue(moto_endpoint, queue) == 0, what="the late message handled")
        assert read_tree(dest) == V3
        results = {
            r: d.metric("dagmirror_events_total", result=r)
            for r in ("matched", "unrelated", "foreign", "malformed")
        }
        assert results == {"matched": 4, "unrelated": 1, "foreign": 1, "malformed": 1}
        assert d.get("/healthz")[0] == 200


def test_a_failing_pass_leaves_its_message_and_the_next_success_deletes_it(
    s3: Any, bucket: str, moto_endpoint: str, queue: str, tmp_path: Path
) -> None:
    dest = tmp_path / "dags"
    sqs = sqs_client(moto_endpoint)
    with daemon(bucket, dest, moto_endpoint, queue, "--mode", "releases") as d:
        d.until(lambda: passes(d, "failed") == 1, what="the first pass failing: no release yet")
        sqs.send_message(QueueUrl=queue, MessageBody=s3_event(bucket, pointer_key(PREFIX)))
        d.until(lambda: passes(d, "failed") == 2, what="the pass the event started, failing too")
        assert in_queue(moto_endpoint, queue) == 1  # kept: no pass covering it succeeded
        publish(s3, bucket, PREFIX, V1)
        sqs.send_message(QueueUrl=queue, MessageBody=s3_event(bucket, pointer_key(PREFIX)))
        d.until(lambda: read_tree(dest) == V1, what="the release installed")
        d.until(lambda: in_queue(moto_endpoint, queue) == 0, what="both messages deleted")
        assert passes(d) == 1


def test_s3_notifications_from_the_server_reach_the_daemon(
    s3: Any, bucket: str, moto_endpoint: str, queue: str, tmp_path: Path
) -> None:
    """moto server sends the bucket's own notifications to the queue: the whole path, no hand-made message."""
    arn = sqs_client(moto_endpoint).get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    notify = {
        "QueueArn": arn["Attributes"]["QueueArn"],
        "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
    }
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [notify]}
    )
    publish(s3, bucket, PREFIX, V1)
    dest = tmp_path / "dags"
    with daemon(bucket, dest, moto_endpoint, queue) as d:
        d.until(lambda: d.get("/readyz")[0] == 200, what="the first pass")
        publish(s3, bucket, PREFIX, V2, seq=2)
        d.until(lambda: read_tree(dest) == V2, what="the release the notification announced")
        d.until(lambda: in_queue(moto_endpoint, queue) == 0, what="every notification handled")
        assert (d.metric("dagmirror_events_total", result="matched") or 0) >= 1
        assert (d.metric("dagmirror_events_total", result="unrelated") or 0) >= 1  # bodies, manifest, archive


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    os.environ.get("DAGMIRROR_TEST_LOCALSTACK") != "1",
    reason="installs LocalStack into .venv-localstack/ (1-2 min once): set DAGMIRROR_TEST_LOCALSTACK=1",
)
def test_a_localstack_s3_notification_through_sqs_wakes_the_daemon(tmp_path: Path) -> None:
    with localstack_server(tmp_path / "localstack", services="s3,sqs") as server:
        endpoint = server.endpoint_url
        s3, sqs = s3_client(endpoint), sqs_client(endpoint)
        create_bucket(s3, "dags")
        url = sqs.create_queue(QueueName="dagmirror")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        notify = {
            "QueueArn": arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "metadata/releases/pointers/"}]}},
        }
        s3.put_bucket_notification_configuration(
            Bucket="dags", NotificationConfiguration={"QueueConfigurations": [notify]}
        )
        publish(s3, "dags", PREFIX, V1)
        dest = tmp_path / "dags"
        with daemon("dags", dest, endpoint, url) as d:
            d.until(lambda: d.get("/readyz")[0] == 200, seconds=60, what="the first pass")
            publish(s3, "dags", PREFIX, V2, seq=2)
            d.until(lambda: read_tree(dest) == V2, seconds=60, what="the release the notification announced")
            d.until(lambda: in_queue(endpoint, url) == 0, seconds=60, what="the notification deleted")
            assert (d.metric("dagmirror_events_total", result="matched") or 0) >= 1
            assert passes(d) >= 2
