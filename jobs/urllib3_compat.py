"""The one place we reach below urllib3's public surface: checking the address connected to,
and reading a body into a reused buffer.

DQ_ALLOW_PRIVATE_NETWORKS=0 must judge the address a download's socket is connected to, not
a name resolved beforehand (a name that rebinds between our lookup and the client's would
pass): the check sits where urllib3 opens every socket, `HTTPConnection._new_conn`, which
both its `HTTPConnection.connect` and `HTTPSConnection.connect` call before a byte is sent
(before the TLS handshake too). That method is undocumented; pyproject.toml pins urllib3 2.x
and tests/test_urllib3_compat.py fails loudly when an upgrade stops calling it. The pool
classes are chosen through `PoolManager.pool_classes_by_scheme` and the adapter hook
requests documents for subclassing (`HTTPAdapter.init_poolmanager`).

Every redirect hop opens its socket through the same pool manager, so each hop is checked.
A proxy would connect instead of us and hide the server's address: with the guard on, a
download through a proxy is refused with a message saying so.

`body_reader`: urllib3's and http.client's reads return a new bytes object per call (two
copies of every byte before it reaches the file). The socket's buffered reader underneath
(`urllib3.HTTPResponse._fp` is the http.client response, whose `fp` it reads) can fill our
own buffer instead, one `readinto1` per arrival. Only for a body with a length and no
chunking, which http.client would otherwise decode; the caller reads at most that length.
tests/test_urllib3_compat.py fails when either attribute moves.
"""

from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Callable
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from jobs import messages
from jobs.errors import InvalidRequest
from jobs.urls import refuse_private_peer


def _checked(sock: socket.socket, host: str) -> socket.socket:
    try:
        refuse_private_peer(host, sock.getpeername()[0])
    except BaseException:
        sock.close()
        raise
    return sock


class GuardedHTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn(), self.host)


class GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn(), self.host)


class GuardedHTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GlobalOnlyAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose every socket must be connected to a globally routable address."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPConnectionPool,
            "https": GuardedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise InvalidRequest(messages.PROXY_UNCHECKED)


BodyReader = Callable[[memoryview], int]


def body_reader(response: requests.Response) -> BodyReader | None:
    """`readinto1` on the socket under `response`, or None when http.client must decode the body."""
    inner = getattr(response.raw, "_fp", None)
    if not isinstance(inner, http.client.HTTPResponse) or inner.chunked:
        return None
    socket_reader = inner.fp
    if not isinstance(socket_reader, io.BufferedReader):
        return None
    return socket_reader.readinto1
