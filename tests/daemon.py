"""Drive a real `dagmirror run` process: start it, poll its HTTP endpoints, signal it, collect its output."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from dagmirror.devtools.servers import free_port, s3_env


class Daemon:
    def __init__(
        self,
        source: str,
        dest: Path,
        endpoint: str,
        *flags: str,
        exe: Sequence[str] = (sys.executable, "-m", "dagmirror"),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.cmd = [*exe, "run", source, str(dest), "--endpoint-url", endpoint,
                    "--http", f"127.0.0.1:{self.port}", *flags]  # fmt: skip
        self.env = env or s3_env(endpoint)
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Daemon:
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        # stderr is read as it comes, so a test can wait for a log line instead of the wall clock.
        self._reader = threading.Thread(target=self._read_stderr, name="daemon-stderr", daemon=True)
        self._reader.start()
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        with self.proc.stderr as stream:
            for line in stream:
                self._lines.append(line)

    def logged(self, text: str) -> bool:
        """Whether a line the daemon has written to stderr so far contains `text`."""
        return any(text in line for line in list(self._lines))

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.finish()

    def get(self, path: str) -> tuple[int, str]:
        """(status, body), or (0, error) while the server is not listening yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample on /metrics, or None when absent."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith("#") or " " not in line:
                continue
            series, value = line.rsplit(" ", 1)
            metric, _, rest = series.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric == name and got == want:
                return float(value)
        return None

    def until(self, predicate: Callable[[], object], seconds: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            assert self.proc is not None
            if self.proc.poll() is not None:
                self.finish()
                raise AssertionError(
                    f"daemon exited {self.proc.returncode} waiting for {what}: {self.stderr}"
                )
            assert time.monotonic() < deadline, f"{what} not reached in {seconds}s"
            time.sleep(0.05)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        self.stderr = "".join(self._lines)
        return self.proc.returncode
