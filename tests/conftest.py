"""Shared fixtures: one moto server per test session on loopback, its client, a fresh bucket per test.

Plain helpers (read_tree, write_tree, put_all, no_sleep, the CLI runner) are in helpers.py; the real-process
daemon driver is daemon.py; what only the reliability suites need (History, Reader, checks) is faults.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.servers import moto_server, s3_client

from .podman import REPORT


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API over HTTP (moto server in a subprocess), stopped by pid at the end of the session."""
    with moto_server() as server:
        yield server.endpoint_url


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    return s3_client(moto_endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"dags-{uuid.uuid4().hex[:12]}"
    create_bucket(s3, name)
    return name


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What the container tests measured (build time, image size), at the end of the run."""
    for line in REPORT:
        terminalreporter.write_line(line)
