"""Where AWS identity comes from: the SDK's configuration chain (env, profile, SSO, web identity, IMDS...),
for the lean transport as a credentials provider plus a region, for the SDK paths as an aioboto3 Session.
Both are built here so that a bad AWS configuration (an unknown profile, partial credentials, an unreadable
config file) is always a SourceConfigError: the CLI exits 2 with one line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dagmirror.config import MirrorConfig
from dagmirror.errors import SourceConfigError
from dagmirror.source._translate import NO_CREDENTIALS, first_line
from dagmirror.source.sigv4 import Credentials

CredentialsProvider = Callable[[], Awaitable[Credentials]]
_REFRESH_SECONDS = 60  # frozen credentials are re-read this often, so temporary ones refresh


def sdk_session(profile: str | None, region: str | None) -> Any:
    """An aioboto3 Session; only the sdk transport and the store pay for importing aioboto3."""
    import aioboto3
    from botocore.exceptions import BotoCoreError

    try:
        return aioboto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:
        raise SourceConfigError(f"AWS configuration: {first_line(exc)}") from None


async def lean_credentials(config: MirrorConfig) -> tuple[CredentialsProvider, str]:
    """The SDK's credential chain and region, resolved once in a thread (it may do network I/O)."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    def resolve() -> tuple[Any, str]:
        session = botocore.session.Session(profile=config.profile)
        region = config.region or session.get_config_variable("region") or "us-east-1"
        return session.get_credentials(), str(region)

    try:
        chain, region = await asyncio.to_thread(resolve)
    except BotoCoreError as exc:  # unknown profile, partial credentials, unreadable config...
        raise SourceConfigError(f"AWS configuration: {first_line(exc)}") from None
    if chain is None:
        raise SourceConfigError(NO_CREDENTIALS)
    cached: list[tuple[float, Credentials]] = []
    lock = asyncio.Lock()  # one refresh at a time, not one per worker

    async def provider() -> Credentials:
        if cached and time.monotonic() - cached[0][0] <= _REFRESH_SECONDS:
            return cached[0][1]
        async with lock:
            if not cached or time.monotonic() - cached[0][0] > _REFRESH_SECONDS:
                try:
                    frozen = await asyncio.to_thread(chain.get_frozen_credentials)
                except BotoCoreError as exc:
                    raise SourceConfigError(f"AWS credentials: {first_line(exc)}") from None
                creds = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
                cached[:] = [(time.monotonic(), creds)]
        return cached[0][1]

    return provider, region
