"""Choosing and opening a transport: kept out of the package's __init__ (the Protocols), so that code which
only needs the seams (deploy's pure plan, the fakes) never depends on a transport."""

from __future__ import annotations

from dagmirror.config import MirrorConfig
from dagmirror.source import ObjectSource


async def open_source(config: MirrorConfig) -> ObjectSource:
    """The ObjectSource for `config.transport`: "lean" (default) or "sdk"."""
    if config.transport == "sdk":
        from dagmirror.source.sdk import SdkSource  # the SDK loads only for the transport that needs it

        return await SdkSource.open(config)
    from dagmirror.source.lean import LeanSource

    return await LeanSource.open(config)
