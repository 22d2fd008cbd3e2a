"""The mirror engine: one pass is listing -> planner -> fetchers -> deletes over a PassContext.

mirror.py    Mirror: source, DEST lock, thread pool and state across passes; one pass at a time
syncpass.py  SyncPass: the stages in one TaskGroup, then the delete phase, then the report
listing.py   stage 1: fan-out listing -> Batches          planner.py  stage 2: decisions -> Jobs
fetcher.py   stage 3: GET, verify, install               deletes.py  stage 4: guarded, confirmed deletes
context.py   what the stages share (PassContext, Ledger)  tally.py    the typed counters -> SyncReport
"""

from dagmirror.engine.mirror import Mirror
from dagmirror.engine.tally import Progress, Tally

__all__ = ["Mirror", "Progress", "Tally"]
