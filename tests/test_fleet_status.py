"""The status record (dagmirror/fleet/status.py) and the instance id rule: pure, tested with literals. A
status object is whatever someone with write access to the bucket put there."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from dagmirror.config.fleet import default_instance_id, instance_id_problem
from dagmirror.fleet.status import (
    FORMAT,
    MAX_ERROR_CHARS,
    MAX_STATUS_BYTES,
    Status,
    StatusError,
    instance_of,
    one_line,
    parse_status,
    status_key,
)

PREFIX = "dags/production/"
RELEASE = "3f9c" + "0" * 60


def status(**changes: Any) -> Status:
    base = Status("pod-a", PREFIX, 1_000.0, 300.0, 900.0, "0.1.0", mode="releases", release=RELEASE)
    return dataclasses.replace(base, **changes)


def doc(**changes: Any) -> bytes:
    return orjson.dumps(status().to_dict() | changes)


def test_a_status_lives_under_its_environment_prefix_and_instance_id() -> None:
    assert status_key(PREFIX, "pod-a") == "metadata/fleet/dags/production/pod-a.json"
    assert status_key("", "pod-a") == "metadata/fleet/pod-a.json"
    assert instance_of("metadata/fleet/dags/production/pod-a.json", PREFIX) == "pod-a"


@pytest.mark.parametrize(
    "key",
    [
        "metadata/fleet/dags/production/team/pod-a.json",  # a deeper key is not an instance of this env
        "metadata/fleet/dags/production/pod-a.txt",
        "metadata/fleet/dags/production/.json",
        "metadata/fleet/dags/staging/pod-a.json",
        "metadata/fleet/dags/production/-rf.json",
    ],
)
def test_keys_that_do_not_name_an_instance_are_not_read_as_one(key: str) -> None:
    assert instance_of(key, PREFIX) is None


def test_encode_and_parse_round_trip() -> None:
    s = status(last_success=950.5, last_error="GET x: 503 SlowDown", failures=2, release_seq=12)
    assert parse_status(s.encode(), prefix=PREFIX, instance="pod-a") == s


@pytest.mark.parametrize(
    "name", ["pod-a", "airflow-worker-7d9f8c-x2x4q", "ip-10-0-0-1.ec2.internal", "A_1", "x" * 253]
)
def test_host_and_pod_names_are_instance_ids(name: str) -> None:
    assert instance_id_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", "a/b", "..", ".hidden", "-rf", "x" * 254, "pod a", "pod\x1b[2J", "pöd", "a\\b", 7, None]
)
def test_ids_that_could_leave_their_folder_or_drive_a_terminal_are_refused(name: object) -> None:
    assert instance_id_problem(name) is not None


def test_the_default_instance_id_is_the_pod_name_then_the_host_name() -> None:
    assert default_instance_id({"HOSTNAME": "airflow-worker-0"}) == "airflow-worker-0"
    assert default_instance_id({}) != ""


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"x" * (MAX_STATUS_BYTES + 1), "larger than"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (doc(format="dagmirror.status/9"), "format"),
        (orjson.dumps({k: v for k, v in status().to_dict().items() if k != "written"}), "missing field"),
        (doc(written="yesterday"), "written: expected a number"),
        (doc(written=True), "written: expected a number"),
        (doc(written=1e300), "written"),
        (doc(written=-5), "written"),
        (doc(heartbeat=0), "heartbeat"),
        (doc(heartbeat=86400 * 30), "heartbeat"),  # a fake instance may not stay 'live' for 90 days
        (doc(release="latest"), "not a release id"),
        (doc(release_seq=-1), "release_seq"),
        (doc(release_seq=1.5), "release_seq"),
        (doc(failures="many"), "failures"),
        (doc(state="on fire"), "state"),
        (doc(mode=["objects"]), "mode"),
        (doc(version=["0.1"]), "version: expected text"),
        (doc(version="v" * 65), "version: longer than"),
        (doc(last_error="e" * (MAX_ERROR_CHARS + 1)), "last_error: longer than"),
        (doc(instance="pod-b"), "names instance 'pod-b'"),
        (doc(instance="../pod-a"), "instance id"),
        (doc(prefix="dags/dev/"), "names prefix 'dags/dev/'"),
    ],
)
def test_anything_but_a_status_of_this_instance_is_refused_with_one_line(body: bytes, why: str) -> None:
    with pytest.raises(StatusError) as caught:
        parse_status(body, prefix=PREFIX, instance="pod-a")
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 300


def test_texts_are_read_as_one_bounded_line() -> None:
    hostile = doc(last_error="boom\n\x1b[2Jfake line\r\x07", version="0.1\x1b]0;x\x07")
    parsed = parse_status(hostile, prefix=PREFIX, instance="pod-a")
    assert parsed.last_error == "boom [2Jfake line"
    assert parsed.version == "0.1 ]0;x"
    assert one_line("x" * 1000).endswith("...")
    assert len(one_line("x" * 1000)) == MAX_ERROR_CHARS


def test_the_format_is_named_in_every_record() -> None:
    assert orjson.loads(status().encode())["format"] == FORMAT
