"""A real mosquitto process on a free port, which tests can stop and restart."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("mosquitto is not installed: the test command (scripts/test) installs it")
    return found


def wait_for_port(port: int, timeout: float = 10.0, up: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} within {timeout} s")


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False, extra: str = "",
                 cluster_config: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_file = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice",
            "max_keepalive 65535",
            # Started as root, mosquitto would switch to the "mosquitto" user, who
            # cannot write its log or persistence file in the test's directory.
            f"user {getpass.getuser()}",
        ]
        if persistence or cluster_config:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if cluster_config:
            # The cluster's shipped settings (queues, inflight, expiry), on our port and directory.
            own = ("listener", "persistence", "persistence_location", "autosave_interval", "allow_anonymous",
                   "max_keepalive")
            lines += [line for line in Path(cluster_config).read_text().splitlines()
                      if line.strip() and not line.startswith("#") and line.split()[0] not in own]
        self.config_file.write_text("\n".join(lines) + "\n" + extra)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config_file)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        wait_for_port(self.port, up=False)

    def restart(self) -> None:
        self.stop()
        self.start()
