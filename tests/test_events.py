"""S3 event messages as data (dagmirror/events.py) with literal messages of both formats, and the SQS trigger
(service/triggers.py EventTrigger) over the in-memory queue: what wakes which mapping, what is dropped, and
when a message may be deleted. The same over HTTP (moto server, LocalStack) is in test_events_sqs.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from dagmirror.config import ServiceConfig
from dagmirror.events import Inbox, ObjectEvent, Watch, parse_message, result_of, route
from dagmirror.manifest import pointer_key
from dagmirror.metrics import TriggerMetrics
from dagmirror.service.triggers import EventTrigger
from dagmirror.source.memory import MemorySource
from dagmirror.source.queue import MemoryQueue

POINTER = "metadata/releases/pointers/dags/prod/pointer.json"

S3_PUT = """{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-west-1",
"eventTime":"2026-11-30T10:00:00.000Z","eventName":"ObjectCreated:Put",
"userIdentity":{"principalId":"AWS:AIDAEXAMPLE"},"requestParameters":{"sourceIPAddress":"10.0.0.1"},
"responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
"s3":{"s3SchemaVersion":"1.0","configurationId":"dagmirror",
"bucket":{"name":"company-airflow","ownerIdentity":{"principalId":"A3NL1KOZZKExample"},"arn":"arn:aws:s3:::company-airflow"},
"object":{"key":"metadata/releases/pointers/dags/prod/pointer.json","size":412,"eTag":"d41d8cd98f00b204e9800998ecf8427e",
"sequencer":"0055AED6DCD90281E5"}}}]}"""

EVENTBRIDGE_CREATED = """{"version":"0","id":"17793124-05d4-b198-2fde-7ededc63b103",
"detail-type":"Object Created","source":"aws.s3","account":"111122223333","time":"2026-11-30T10:00:00Z",
"region":"eu-west-1",
"resources":["arn:aws:s3:::company-airflow"],"detail":{"version":"0","bucket":{"name":"company-airflow"},
"object":{"key":"dags/prod/team a/etl+daily.py","size":5,"etag":"b1946ac92492d2347c6235b4d2611184",
"sequencer":"00617F08299329D189"},"request-id":"N4N7GDK58NMKJ12R","requester":"123456789012",
"source-ip-address":"1.2.3.4","reason":"PutObject"}}"""

S3_TEST_EVENT = """{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-30T10:00:00.000Z",
"Bucket":"company-airflow","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"""

WATCHES = (
    Watch("prod", "company-airflow", "dags/prod/", "auto"),
    Watch("prod-releases", "company-airflow", "dags/prod/", "releases"),
    Watch("prod-objects", "company-airflow", "dags/prod/", "objects"),
    Watch("dev", "company-airflow", "dags/dev/", "auto"),
    Watch("other-bucket", "another-bucket", "dags/prod/", "auto"),
)


def s3_message(*keys: str, bucket: str = "company-airflow", source: str = "aws:s3") -> str:
    records = [
        {
            "eventSource": source,
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": k}},
        }
        for k in keys
    ]
    return orjson.dumps({"Records": records}).decode()


# -- parsing --


def test_an_s3_notification_names_the_bucket_and_the_decoded_key() -> None:
    parsed = parse_message(S3_PUT)
    assert parsed.kind == "s3"
    assert parsed.events == (ObjectEvent("company-airflow", POINTER, "ObjectCreated:Put"),)


def test_s3_keys_are_form_decoded_and_eventbridge_keys_are_taken_as_they_are() -> None:
    assert (
        parse_message(s3_message("dags/prod/team+a/etl%2Bdaily.py")).events[0].key
        == "dags/prod/team a/etl+daily.py"
    )
    assert parse_message(s3_message("dags%2Fprod%2Fa.py")).events[0].key == "dags/prod/a.py"  # MinIO, moto
    bridge = parse_message(EVENTBRIDGE_CREATED)
    assert bridge.kind == "eventbridge"
    assert bridge.events == (
        ObjectEvent("company-airflow", "dags/prod/team a/etl+daily.py", "Object Created"),
    )


def test_a_notification_through_sns_is_unwrapped() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:eu-west-1:1:t",
        "Message": S3_PUT,
    }
    assert parse_message(orjson.dumps(envelope)).events == parse_message(S3_PUT).events


def test_a_record_with_several_keys_gives_one_event_each() -> None:
    parsed = parse_message(s3_message("dags/prod/a.py", "dags/dev/b.py"))
    assert [e.key for e in parsed.events] == ["dags/prod/a.py", "dags/dev/b.py"]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (S3_TEST_EVENT, "setup"),
        ('{"Type":"SubscriptionConfirmation","Token":"abc"}', "foreign"),
        ('{"hello":"world"}', "foreign"),
        ("[1, 2, 3]", "foreign"),
        ('"just a string"', "foreign"),
        ('{"source":"aws.ec2","detail":{"instance-id":"i-1"}}', "foreign"),
        (s3_message("dags/prod/a.py", source="aws:sqs"), "foreign"),
        ("not json at all", "malformed"),
        ("", "malformed"),
        ('{"Records": []}', "malformed"),
        ('{"Records": {"s3": 1}}', "malformed"),
        ('{"Records": [{"eventSource":"aws:s3","s3":{"bucket":{"name":"b"}}}]}', "malformed"),
        ('{"Records": [{"eventSource":"aws:s3","s3":{"bucket":"b","object":{"key":"k"}}}]}', "malformed"),
        (
            '{"Records": [{"eventSource":"aws:s3","s3":{"bucket":{"name":""},"object":{"key":"k"}}}]}',
            "malformed",
        ),
        ('{"source":"aws.s3","detail":{"bucket":{"name":"b"},"object":{"key":7}}}', "malformed"),
        ('{"source":"aws.s3","detail":"nope"}', "malformed"),
        ('{"Records": [' * 5000 + "]" * 5000 + "}", "malformed"),  # nested past any parser's depth
        ("x" * (256 * 1024 + 1), "malformed"),
        (b"\xff\xfe\x00garbage", "malformed"),
    ],
)
def test_foreign_and_malformed_messages_are_classified_never_raised(body: str | bytes, kind: str) -> None:
    parsed = parse_message(body)
    assert parsed.kind == kind
    assert parsed.events == ()
    assert route(parsed, WATCHES) == frozenset()
    assert result_of(parsed, frozenset()) == kind


# -- routing --


def test_the_pointer_concerns_release_and_auto_mappings_of_its_prefix_only() -> None:
    assert route(parse_message(S3_PUT), WATCHES) == {"prod", "prod-releases"}


def test_a_key_under_the_prefix_concerns_object_and_auto_mappings_only() -> None:
    parsed = parse_message(s3_message("dags/prod/team/a.py"))
    assert route(parsed, WATCHES) == {"prod", "prod-objects"}
    assert result_of(parsed, route(parsed, WATCHES)) == "matched"


def test_keys_of_another_prefix_bucket_or_environment_are_unrelated() -> None:
    for message in (
        s3_message("dags/production/a.py"),  # shares a string prefix, not the folder
        s3_message("metadata/fleet/dags/prod/pod-a.json"),  # the instances' own status objects
        s3_message(pointer_key("dags/staging/")),
        s3_message("dags/prod/a.py", bucket="elsewhere"),
    ):
        parsed = parse_message(message)
        assert route(parsed, WATCHES) == frozenset()
        assert result_of(parsed, frozenset()) == "unrelated"


def test_a_mapping_of_the_whole_bucket_sees_every_key() -> None:
    whole = Watch("all", "company-airflow", "", "auto")
    assert whole.concerns(ObjectEvent("company-airflow", "anything/at/all.py", "ObjectRemoved:Delete"))
    assert whole.concerns(ObjectEvent("company-airflow", pointer_key(""), "Object Created"))


# -- the inbox: when a message may go --


def test_a_message_goes_after_a_pass_started_after_it_succeeded() -> None:
    inbox = Inbox()
    assert inbox.add("m1", "r1", {"prod": 3})  # pass 3 was running when it came
    assert inbox.covered("prod", 3) == []  # pass 3 may have read the pointer before the change
    assert inbox.covered("prod", 4) == ["r1"]
    assert len(inbox) == 0


def test_a_message_for_two_mappings_waits_for_both() -> None:
    inbox = Inbox()
    inbox.add("m1", "r1", {"a": 0, "b": 5})
    assert inbox.covered("a", 1) == []
    assert inbox.covered("b", 5) == []
    assert inbox.covered("b", 6) == ["r1"]


def test_a_redelivered_message_keeps_its_place_and_takes_the_new_receipt() -> None:
    inbox = Inbox()
    assert inbox.add("m1", "r1", {"prod": 0})
    assert not inbox.add("m1", "r2", {"prod": 7})  # came back after its visibility timeout
    assert inbox.covered("prod", 1) == ["r2"]  # the first record of it counts; the newest handle deletes


def test_a_pass_of_another_mapping_covers_nothing() -> None:
    inbox = Inbox()
    inbox.add("m1", "r1", {"prod": 0})
    assert inbox.covered("dev", 10) == []
    assert len(inbox) == 1


# -- the trigger over the in-memory queue --


class Runners:
    """Stands in for the daemon's runners: counts passes started, records wake-ups."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {"prod": 0, "dev": 0}
        self.woken: list[str] = []

    def wake(self, mapping: str) -> None:
        self.woken.append(mapping)


def make_trigger(queue: MemoryQueue, runners: Runners) -> tuple[EventTrigger, TriggerMetrics]:
    metrics = TriggerMetrics(CollectorRegistry())

    async def open_queue() -> MemoryQueue:
        return queue

    trigger = EventTrigger(
        open_queue,
        (Watch("prod", "company-airflow", "dags/prod/"), Watch("dev", "company-airflow", "dags/dev/")),
        wake=runners.wake,
        started=runners.started.__getitem__,
        metrics=metrics,
        sleep=lambda _: asyncio.sleep(0),
        wait=0.05,
        visibility=0.2,
    )
    return trigger, metrics


async def until(predicate: Callable[[], object], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def count(metrics: TriggerMetrics, result: str) -> float:
    return metrics.events.labels(result)._value.get()


async def test_an_event_wakes_only_its_mapping_and_is_deleted_after_its_pass() -> None:
    queue, runners = MemoryQueue(), Runners()
    trigger, metrics = make_trigger(queue, runners)
    stop = asyncio.Event()
    task = asyncio.create_task(trigger.run(stop))
    queue.send(S3_PUT.replace("dags/prod/", "dags/dev/"))
    await until(lambda: runners.woken == ["dev"])
    assert queue.bodies()  # no pass yet: the message stays
    runners.started["dev"] = 1
    trigger.pass_succeeded("dev", 1)
    await until(lambda: not queue.bodies())
    stop.set()
    await task
    assert count(metrics, "matched") == 1
    assert metrics.events_deleted._value.get() == 1


async def test_foreign_malformed_and_setup_messages_are_counted_and_dropped() -> None:
    queue, runners = MemoryQueue(), Runners()
    trigger, metrics = make_trigger(queue, runners)
    stop = asyncio.Event()
    task = asyncio.create_task(trigger.run(stop))
    for body in ("garbage", '{"hello": 1}', S3_TEST_EVENT, s3_message("dags/staging/a.py")):
        queue.send(body)
    await until(lambda: not queue.bodies())
    stop.set()
    await task
    assert runners.woken == []
    assert [count(metrics, r) for r in ("malformed", "foreign", "setup", "unrelated")] == [1, 1, 1, 1]


async def test_a_duplicate_delivery_wakes_once_and_a_failed_pass_keeps_the_message() -> None:
    queue, runners = MemoryQueue(), Runners()
    trigger, metrics = make_trigger(queue, runners)
    stop = asyncio.Event()
    task = asyncio.create_task(trigger.run(stop))
    first = queue.send(s3_message("dags/prod/a.py"))
    await until(lambda: runners.woken == ["prod"])
    # The pass fails (no pass_succeeded): after its visibility timeout the message is delivered again.
    await until(lambda: count(metrics, "duplicate") >= 1)
    assert runners.woken == ["prod"]
    assert queue.bodies()
    runners.started["prod"] = 1
    trigger.pass_succeeded("prod", 1)
    await until(lambda: not queue.bodies())
    queue.send(s3_message("dags/prod/a.py"), message_id=first)  # S3 delivers at least once: again, later
    await until(lambda: runners.woken == ["prod", "prod"])
    stop.set()
    await task


async def test_a_queue_outage_is_retried_and_never_raised() -> None:
    queue, runners = MemoryQueue(fail_receives=3, fail_deletes=1), Runners()
    trigger, metrics = make_trigger(queue, runners)
    stop = asyncio.Event()
    task = asyncio.create_task(trigger.run(stop))
    queue.send(s3_message("dags/prod/a.py"))
    await until(lambda: runners.woken == ["prod"])
    runners.started["prod"] = 1
    trigger.pass_succeeded("prod", 1)
    await until(lambda: not queue.bodies())
    stop.set()
    await task
    assert metrics.queue_errors.labels("receive")._value.get() == 3
    assert metrics.queue_errors.labels("delete")._value.get() == 1


async def test_stopping_deletes_what_the_last_passes_covered() -> None:
    queue, runners = MemoryQueue(), Runners()
    trigger, _ = make_trigger(queue, runners)
    stop = asyncio.Event()
    task = asyncio.create_task(trigger.run(stop))
    queue.send(s3_message("dags/prod/a.py"))
    await until(lambda: runners.woken == ["prod"])
    trigger.pass_succeeded("prod", 1)
    stop.set()
    await task
    assert queue.bodies() == []


# -- the default interval by mode --


async def test_the_default_interval_is_5_s_following_a_release_and_30_s_listing(tmp_path: Path) -> None:
    from .releases import publish_to
    from .test_service import Sleeps, make_service

    for files, expected in (({"dags/team/a.py": b"a\n"}, 30.0), ({}, 5.0)):
        source = MemorySource(files)
        if not files:
            publish_to(source.put, "dags/", {"team/a.py": b"a\n"})
        sleeps = Sleeps()
        service = make_service(tmp_path / str(expected), source, sleep=sleeps, jitter=0, http=None)
        assert service.config.interval is None
        task = asyncio.create_task(service.run(install_signals=False))
        await until(lambda: len(sleeps.delays) >= 2)  # noqa: B023 - awaited inside the iteration
        service.stop()
        await task
        assert set(sleeps.delays[:2]) == {expected}


def test_an_explicit_interval_holds_in_every_mode() -> None:
    config = ServiceConfig((), interval=12.0)
    assert (config.interval_for("releases"), config.interval_for("objects")) == (12.0, 12.0)
    assert config.staleness_limit == 120.0
    assert ServiceConfig((), interval=60.0).staleness_limit == 240.0
