"""`pidaemon sim` as a child process: a server and N simulated workers against a real broker, the server's
HTTP (the API and the dashboard) on a free port. Stopped with SIGTERM and started again like a real server."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support.mosquitto import free_port, wait_for_port


class SimProcess:
    def __init__(self, broker_url: str, state_dir: Path, workers: int, http_port: int | None = None,
                 log_path: Path | None = None, extra_args: tuple[str, ...] = ()):
        self.broker_url, self.state_dir, self.workers = broker_url, Path(state_dir), workers
        self.http_port = http_port or free_port()
        self.log_path = log_path or self.state_dir.with_name(self.state_dir.name + ".log")
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def worker_ids(self) -> list[str]:
        return [f"sim-worker-{i:04d}" for i in range(1, self.workers + 1)]

    def command(self, fresh: bool) -> list[str]:
        return [sys.executable, "-m", "pidaemon", "sim", "--broker", self.broker_url, "--workers", str(self.workers),
                "--http", f"127.0.0.1:{self.http_port}", "--state-dir", str(self.state_dir), "--log-level", "warning",
                *(["--fresh"] if fresh else []), *self.extra_args]

    def start(self, fresh: bool = False, timeout: float = 60.0) -> "SimProcess":
        """Start, and return once the HTTP port answers (TimeoutError, with the log, if it does not)."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(fresh), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for_port(self.http_port, timeout)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"pidaemon sim did not serve HTTP on {self.http_port} within {timeout} s:\n"
                               f"{self.log_path.read_text(errors='replace')[-4000:]}") from None
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: the nodes stop cleanly (each publishes offline), the HTTP server closes its WebSockets."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None
