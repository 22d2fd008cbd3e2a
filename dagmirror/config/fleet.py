"""Settings of an instance's status object (docs/operations.md, "The fleet"): the instance id and the
heartbeat. The id names an S3 key, `metadata/fleet/<env prefix><instance id>.json`, and is read back by
`dagmirror fleet` from objects anyone with write access can change, so one rule checks it on both sides."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

# A host or pod name: letters, digits, '.', '_', '-' (no '/', so it cannot leave its folder; no leading
# '.' or '-', so never '.', '..' or an option), at most 253 characters (the DNS limit on a host name).
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
DEFAULT_HEARTBEAT = 300.0  # seconds; docs/operations.md states what it costs
HEARTBEAT_RANGE = (1.0, 86400.0)


def instance_id_problem(value: object) -> str | None:
    """Why `value` cannot be an instance id, or None when it can."""
    if isinstance(value, str) and _INSTANCE_ID.fullmatch(value):
        return None
    return (
        f"instance id {value!r:.80} must be 1-253 letters, digits, '.', '_' or '-', starting with a letter "
        "or a digit"
    )


def default_instance_id(env: Mapping[str, str]) -> str:
    """The pod name in Kubernetes ($HOSTNAME), else the host name."""
    return env.get("HOSTNAME") or socket.gethostname()
