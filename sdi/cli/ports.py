"""Whether `sdi serve` can have its port: probed before anything says it is serving.

The probe binds what uvicorn will bind. With several workers uvicorn binds one socket itself
(``uvicorn.Config.bind_socket``: IPv6 when the host holds a ``:``, IPv4 otherwise, the host resolved by
``bind``); with one worker asyncio's ``create_server`` binds every address ``getaddrinfo`` gives for the
host (IPv6 ones with ``IPV6_V6ONLY``). So ``--host localhost`` with two workers is 127.0.0.1 only, and a
server on ::1 does not make the port "in use".

A port is in use when a socket listens on it, or when another socket has bound it but does not listen yet
(uvicorn binds, then its workers listen once the application is imported: a second ``sdi serve`` started
meanwhile would otherwise share the port). Connections of a stopped server that are still closing
(``TIME_WAIT``) do not hold the port: uvicorn binds with ``SO_REUSEADDR``. Both keep a plain bind off the
port; a port with connections in ``TIME_WAIT`` is free only when the kernel's socket list (Linux
``sock_diag``) shows no socket bound or listening on it. Kernels that do not list bound, not yet listening
sockets (before the ``TCP_BOUND_INACTIVE`` dump of recent Linux), or systems without ``sock_diag``, cannot
tell a starting server apart there: the port is then taken as free.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path
from typing import Any

from sdi.errors import ConfigError

__all__ = ["check_port", "where"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_DUMP_REQUEST = 0x301  #: NLM_F_REQUEST | NLM_F_DUMP
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN, _TCP_BOUND_INACTIVE = 10, 13  #: socket states asked for (the second: bound, not listening)


def where(host: str, port: int) -> str:
    """``host:port`` as written in a URL (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(host: str, port: int, *, workers: int = 2) -> None:
    """Fail with one line when uvicorn could not listen on ``host:port`` with ``workers`` workers.

    See the module docstring for which addresses are probed and what holds a port.

    Raises
    ------
    ConfigError
        When the port is in use, the host does not resolve or is not local, or listening is not permitted.
    """
    for family, kind, proto, address, v6only in _addresses(host, port, workers):
        try:
            if not _binds(family, kind, proto, address, reuse=False, v6only=v6only) and not (
                    _binds(family, kind, proto, address, reuse=True, v6only=v6only) and _only_closing(port)):
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        except socket.gaierror as exc:
            raise ConfigError(f"--host {host}: cannot resolve it ({exc.strerror})") from exc
        except OSError as exc:
            raise _port_error(exc, host, port) from exc


def _addresses(host: str, port: int, workers: int) -> list[tuple[int, int, int, Any, bool]]:
    """(family, type, protocol, address, IPV6_V6ONLY) of each socket uvicorn will bind."""
    if workers > 1:  # uvicorn.Config.bind_socket
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(f"--host {host}: cannot resolve it ({exc.strerror})") from exc
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, (host, port), False)]
    try:  # asyncio's create_server(host=..., port=...)
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve it ({exc.strerror})") from exc
    probes: list[tuple[int, int, int, Any, bool]] = [(f, k, p, a, f == socket.AF_INET6) for f, k, p, _, a in infos]
    return list(dict.fromkeys(probes))


def _binds(family: int, kind: int, proto: int, address: Any, *, reuse: bool, v6only: bool) -> bool:
    """Whether a socket binds to ``address`` (``reuse``: with ``SO_REUSEADDR``, as uvicorn binds); ``False`` when
    the address is in use, other errors raised. The probe is closed on return."""
    with socket.socket(family, kind, proto) as probe:
        if reuse:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _port_error(exc: OSError, host: str, port: int) -> ConfigError:
    at = where(host, port)
    other = port + 1 if port < 65535 else 8080
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"--port {port}: {at} is already in use (another server?); stop it or choose another "
                           f"port: `sdi serve --port {other}` or `make demo PORT={other}`")
    if exc.errno == errno.EACCES:
        return ConfigError(f"--port {port}: cannot listen on {at}: permission denied (ports below 1024 need "
                           f"privileges); choose --port 1024 or above")
    return ConfigError(f"--port {port}: cannot listen on {at}: {exc.strerror or exc} (check --host)")


def _only_closing(port: int) -> bool:
    """Whether what keeps a plain bind off ``port`` is only connections closing: some are in ``TIME_WAIT``
    (``/proc/net/tcp*``) and the kernel's socket list shows no socket bound or listening there (any address)."""
    if not _closing_connections(port):
        return False
    try:
        return _holders(port) == 0
    except OSError:  # no sock_diag (not Linux, or refused): the connections closing are taken as the reason
        return True


def _holders(port: int) -> int:
    """How many TCP sockets listen on local ``port``, or have bound it and do not listen yet (``sock_diag``)."""
    found = 0
    wanted = (1 << _TCP_LISTEN) | (1 << _TCP_BOUND_INACTIVE)
    for family in (socket.AF_INET, socket.AF_INET6):
        request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, wanted) + bytes(48)  # inet_diag_req_v2
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
            link.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, 1, 0)
                      + request)
            done = False
            while not done:
                data = link.recv(1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind == _NLMSG_ERROR:
                        raise OSError(errno.EOPNOTSUPP, "sock_diag refused the request")
                    if kind == _NLMSG_DONE or length < 16:
                        done = True
                        break
                    (local_port,) = struct.unpack_from("!H", data, offset + 20)  # inet_diag_msg.id.idiag_sport
                    found += local_port == port
                    offset += (length + 3) & ~3
                done = done or not data
    return found


def _closing_connections(port: int) -> bool:
    """Whether the kernel lists connections of local ``port`` in ``TIME_WAIT`` (Linux ``/proc/net/tcp*``; where
    that cannot be read, assume so, the port being bindable as uvicorn binds it)."""
    found = False
    for name in ("tcp", "tcp6"):
        try:
            lines = Path("/proc/net", name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            return True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].rsplit(":", 1)[-1] == f"{port:04X}" and fields[3] == "06":
                found = True
    return found
