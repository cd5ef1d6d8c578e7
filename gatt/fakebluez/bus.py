"""A private dbus-daemon for the fake BlueZ: allow-all policy, large limits, own socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

DBUS_DAEMON = "/usr/bin/dbus-daemon"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="max_incoming_bytes">268435456</limit>
  <limit name="max_outgoing_bytes">268435456</limit>
  <limit name="max_message_size">33554432</limit>
  <limit name="max_replies_per_connection">1024</limit>
  <limit name="reply_timeout">60000</limit>
</busconfig>
"""


def dbus_daemon_path() -> str | None:
    """The dbus-daemon binary, or None when it is not installed."""
    if os.access(DBUS_DAEMON, os.X_OK):
        return DBUS_DAEMON
    return shutil.which("dbus-daemon")


class PrivateBus:
    """Owns one dbus-daemon process listening on a socket in a temporary directory."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="fakebluez-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout: float = 10.0) -> str:
        """Start the daemon and return its address once it is ready."""
        daemon = dbus_daemon_path()
        if daemon is None:
            raise FileNotFoundError("dbus-daemon not found (install Debian's 'dbus' package)")
        config = self._dir / "bus.conf"
        config.write_text(_CONFIG.format(socket=self._dir / "bus.sock"))
        self._proc = subprocess.Popen(
            [daemon, "--nofork", "--nopidfile", f"--config-file={config}", "--print-address"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            self.stop()
            raise RuntimeError("dbus-daemon did not print its address")
        self.address = line
        return line

    def stop(self) -> None:
        """Terminate the daemon and remove its socket directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)
