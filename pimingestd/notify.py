"""sd_notify over ``$NOTIFY_SOCKET``: READY, STATUS, WATCHDOG, STOPPING.

A few lines over a Unix datagram socket; no dependency. Without
``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op. The watchdog
interval is half of ``$WATCHDOG_USEC``, pinged from the event loop itself, so
a blocked loop misses its pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr.startswith("@"):
            self._addr = "\0" + addr[1:]  # abstract namespace
        elif addr.startswith("/"):
            self._addr = addr
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2_000_000
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, message: str) -> bool:
        """Send one notification; False when not under systemd or the socket is gone."""
        if self._addr is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode("utf-8"), self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str = "draining") -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
