"""Command line: `app.py` (the group, ExitCode, error -> exit code), `mirror.py` (sync, run), `deploy.py`
(deploy, history, rollback, promote, with `--wait`), `gc.py` (gc), `keys.py` (keys generate|show|rotate),
`setup.py` (bucket init, iam-policy, doctor), `fleet.py` (fleet), `render.py` and `render_fleet.py` (what
people and machines read). No sync logic here.

Exit codes: 0 success (rejected keys included), 1 some objects failed or the pass could not complete,
2 usage or configuration error, 3 a safety guard refused deletions, 4 validation refused a deploy, 5 a
concurrent deploy won (CONFLICT) or the fleet has not converged (NOT_CONVERGED: `fleet`, `--wait`).
"""

from dagmirror.cli.app import ExitCode, cli, main  # commands are imported when run (app.COMMANDS)

__all__ = ["ExitCode", "cli", "main"]
