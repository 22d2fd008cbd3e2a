"""The daemon behind `dagmirror run`: passes on an interval with jitter, backoff after failures, SIGUSR1 for
an immediate pass, staged shutdown on SIGTERM/SIGINT, metrics, readiness and audit; several mappings in one
process.

    daemon.py    Service (runners in one TaskGroup, probes, audit shipping, staged shutdown), MappingRunner
    triggers.py  what starts a pass or a shutdown: Interval (jitter, backoff), sleep_or_wake, Signals
"""

from dagmirror.config import Mapping, ServiceConfig
from dagmirror.service.daemon import MappingRunner, Service, s3_audit_sink
from dagmirror.service.triggers import Interval, Signals

__all__ = ["Interval", "Mapping", "MappingRunner", "Service", "ServiceConfig", "Signals", "s3_audit_sink"]
