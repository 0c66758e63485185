"""A network guard for tests: every attempt to reach a host other than loopback is refused
and recorded, so a test can assert that nothing tried (not merely that nothing got through).

Patched at the socket layer, below botocore, urllib3 and http.client: ``socket.socket.connect``
and ``connect_ex``, ``socket.create_connection``, and ``socket.getaddrinfo`` (a name lookup
of a real host is already a step outside). ``bind`` is recorded too, for servers.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: Any) -> bool:
    """True for 127.0.0.0/8, ::1 and the loopback names; everything else is outside."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class NetGuard:
    """What was attempted while the guard was on."""

    #: Refused attempts, as ``"connect 203.0.113.1:443"`` or ``"getaddrinfo kms.amazonaws.com"``.
    refused: list[str] = field(default_factory=list)
    #: Addresses sockets were bound to (``(host, port)``), servers included.
    bound: list[tuple[str, int]] = field(default_factory=list)
    #: Loopback connections let through (a served sandbox), as ``"host:port"``.
    loopback: list[str] = field(default_factory=list)


def _host_port(address: Any) -> tuple[Any, Any]:
    if isinstance(address, tuple) and address:
        return address[0], address[1] if len(address) > 1 else None
    return address, None


@contextmanager
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetGuard]:
    """Refuse and record every non-loopback connection and name lookup inside the block."""
    guard = NetGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_bind = socket.socket.bind
    real_create_connection = socket.create_connection
    real_getaddrinfo = socket.getaddrinfo

    def outside(sock: socket.socket | None, address: Any) -> bool:
        if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
            return False
        host, port = _host_port(address)
        if is_loopback(host):
            guard.loopback.append(f"{host}:{port}")
            return False
        return True

    def connect(self: socket.socket, address: Any) -> None:
        if outside(self, address):
            guard.refused.append(f"connect {address!r}")
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"test guard: refused {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if outside(self, address):
            guard.refused.append(f"connect_ex {address!r}")
            return errno.ECONNREFUSED
        return real_connect_ex(self, address)

    def bind(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host, port = _host_port(address)
            guard.bound.append((str(host), int(port or 0)))
        real_bind(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if outside(None, address):
            guard.refused.append(f"create_connection {address!r}")
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"test guard: refused {address!r}")
        return real_create_connection(address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host):
            guard.refused.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield guard
    finally:
        monkeypatch.setattr(socket.socket, "connect", real_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", real_connect_ex)
        monkeypatch.setattr(socket.socket, "bind", real_bind)
        monkeypatch.setattr(socket, "create_connection", real_create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", real_getaddrinfo)
