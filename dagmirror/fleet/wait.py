"""`--wait SECONDS`: look at the fleet until the live fleet has converged on the target or the time is up.

Each look is one LIST per 1,000 instances and one GET per instance; looks come every second for up to 50
instances and further apart for larger fleets (one GET per instance every `instances / 50` seconds, at most
every 10 s), so waiting on 1,000 instances costs about 100 GETs a second. Silent and stopped instances are
never waited on (converge.py); a look that fails (S3 unreachable after retries) is reported and the wait goes
on with the next one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from dagmirror.errors import DagmirrorError
from dagmirror.fleet.converge import FleetView
from dagmirror.retry import Sleep

Progress = Callable[[FleetView, float], None]  # the latest view and the seconds waited so far
Trouble = Callable[[DagmirrorError, float], None]


def poll_interval(instances: int) -> float:
    return min(10.0, max(1.0, instances / 50))


async def wait_for_fleet(
    look: Callable[[], Awaitable[FleetView]],
    seconds: float,
    *,
    on_progress: Progress,
    on_trouble: Trouble,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> FleetView | None:
    """The first view that converged, else the last view when `seconds` have passed (None if no look ever
    worked: the caller reports the trouble it was told about)."""
    start = clock()
    view: FleetView | None = None
    while True:
        try:
            view = await look()
        except DagmirrorError as exc:
            on_trouble(exc, clock() - start)
        else:
            on_progress(view, clock() - start)
            if view.converged:
                return view
        waited = clock() - start
        if waited >= seconds:
            return view
        await sleep(min(poll_interval(len(view.rows) if view else 0), seconds - waited))
