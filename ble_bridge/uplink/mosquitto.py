"""A private mosquitto on a free localhost port, for the tests and ``bench/uplink.py``.

Never the system service: its own config file, no persistence, bound to 127.0.0.1 only.
``kill()`` and ``start()`` again (same port) play a broker that dies and comes back.
``tls=`` makes the listener TLS (``mqtts://``), optionally wanting a client certificate;
``users=`` turns anonymous access off and writes a password file (``mosquitto_passwd``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The broker's side of an ``mqtts://`` listener (PEM files)."""

    ca_file: Path
    """CA that signed the server's certificate and, with ``require_certificate``, the
    clients' certificates."""
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


def _password_file(path: Path, users: dict[str, str]) -> None:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run(
            [tool, "-b", str(path), user, password],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )


class Mosquitto:
    """``with Mosquitto() as broker: broker.url``; a real broker process."""

    def __init__(
        self,
        *,
        port: int | None = None,
        message_size_limit: int = 0,
        tls: BrokerTls | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.tls = tls
        self._dir = Path(tempfile.mkdtemp(prefix="ble-bridge-mosquitto-"))
        self.config_path = self._dir / "mosquitto.conf"
        lines = [f"listener {self.port} {HOST}"]
        if os.geteuid() == 0:
            # as root mosquitto would switch to its own user before reading the password
            # file and the test's certificates in private temporary directories
            lines.append("user root")
        if tls is not None:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                f"require_certificate {'true' if tls.require_certificate else 'false'}",
            ]
        if users:
            passwords = self._dir / "passwords"
            _password_file(passwords, users)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 10000",
        ]
        if message_size_limit:
            lines.append(f"message_size_limit {message_size_limit}")
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = self._dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {HOST}:{self.port}")

    def kill(self) -> None:
        """SIGKILL: the broker dies without a word (no wills of ours are sent by it)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
