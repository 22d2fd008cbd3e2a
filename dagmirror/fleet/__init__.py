"""The fleet: what every `dagmirror run` instance says it has, and whether they all have the release.

status.py     the status record at metadata/fleet/<env prefix><instance>.json: format, parse (pure)
converge.py   current / lagging / silent / stopped / unreadable, and the summary line (pure)
publisher.py  the daemon's side: one StatusPublisher per mapping (changes, heartbeat, last 'stopped')
reader.py     the deployer's side: every status of an environment (LIST + GETs) and its pointer
wait.py       `--wait`: read, judge and report progress until converged or out of time
"""

from dagmirror.fleet.publisher import StatusPublisher, publishers

__all__ = ["StatusPublisher", "publishers"]
