"""Why MongoDB cannot be reached, in one line, as mongosh would say it.

The driver's server-selection timeout only says that no suitable server was
found. The reason is in what the driver knows, read as structure, not as the
timeout's message text:

- the topology description: the set name the URI asks for, and each
  server's type (primary, secondary, standalone...) and its last check's
  error *type* (``NetworkTimeout``: no answer in time; ``AutoReconnect``:
  the connection failed);
- what each server answered to the driver's monitor (``Heartbeats``, a
  listener the CLI registers on its client): a server whose set name differs
  from the URI's is dropped from the topology, so only its hello reply says
  which name it has;
- for a connection that failed or never answered, one probe of our own,
  bounded by ``PROBE_S``: the address resolved (``socket.gaierror``: DNS),
  a TCP connection (``ConnectionRefusedError``, a timeout, another
  ``OSError``), and when the URI asks for TLS a handshake
  (``ssl.SSLError``). The driver's monitor keeps no exception chain, so the
  operating system's word comes from this probe.

``check(client, settings)`` pings, logs a notice while it waits and raises
``errors.Unreachable`` with that line; ``reason(client)`` is the line;
``Heartbeats`` is passed to the client as an event listener.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from typing import Any, Final

import anyio
from pymongo import errors as pymongo_errors
from pymongo import monitoring
from pymongo.hello import Hello
from pymongo.server_type import SERVER_TYPE

from watcher.ops import logs
from watcher.settings import Settings
from watcher.storage import errors

Address = tuple[str, int | None]
#: A ping still waiting after this long says why (a server selection may last 30 s).
WAITING_NOTICE_S: Final = 1.0
#: Bound on the probe of one address (they run concurrently).
PROBE_S: Final = 2.0
#: Server types that can take jobwatch's reads and writes (a primary, or a
#: standalone / mongos / load balancer where no set name is asked).
_WRITABLE: Final = frozenset(
    {SERVER_TYPE.RSPrimary, SERVER_TYPE.Standalone, SERVER_TYPE.Mongos, SERVER_TYPE.LoadBalancer}
)


async def check(client: Any, settings: Settings) -> None:
    """One ping. Still waiting after ``WAITING_NOTICE_S``, it logs what the
    driver sees so far (``server_waiting``); no usable server within the
    server-selection timeout, or a server that refuses the ping, raises
    ``errors.Unreachable`` naming the cause (the driver's error as its
    ``__cause__``, which ``--debug`` shows). ``errors.ConfigurationProblem``
    (authentication, a bad URI option) passes through."""
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_notice_while_waiting, client, settings)
        try:
            with errors.translated("ping", "retry"):
                await client.admin.command("ping")
        except Exception as exc:  # raised below, outside the task group (which would wrap it in a group)
            failure = exc
        tg.cancel_scope.cancel()
    if isinstance(failure, errors.StoreUnavailable):
        driver_error = failure.__cause__
        if isinstance(driver_error, pymongo_errors.OperationFailure):  # it answered, and said no
            said = (driver_error.details or {}).get("errmsg") or str(driver_error)
            raise errors.Unreachable(
                f"MongoDB at {settings.uri_redacted} refused the ping: {said} ({failure.error})"
            ) from driver_error
        raise errors.Unreachable(
            f"MongoDB at {settings.uri_redacted} is unreachable: {await reason(client)} "
            f"(no usable server within {settings.server_selection_timeout_ms} ms)"
        ) from driver_error
    if failure is not None:
        raise failure


async def _notice_while_waiting(client: Any, settings: Settings) -> None:
    await anyio.sleep(WAITING_NOTICE_S)
    logs.event(
        "server_waiting",
        "INFO",
        "no usable MongoDB server yet; still trying",
        uri=settings.uri_redacted,
        reason=await reason(client),
        timeout_ms=settings.server_selection_timeout_ms,
    )


class Heartbeats(monitoring.ServerHeartbeatListener):
    """What each server last answered to the driver's monitor (its hello
    reply: set name, primary or not), by address; a failed check forgets it."""

    def __init__(self) -> None:
        self.addresses: set[Address] = set()
        self.replies: dict[Address, Hello[Any]] = {}

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        self.addresses.add(event.connection_id)

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self.replies[event.connection_id] = event.reply

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        self.replies.pop(event.connection_id, None)


def heartbeats_of(client: Any) -> Heartbeats | None:
    """The ``Heartbeats`` listener registered on ``client``, if any."""
    for listener in client.options.event_listeners:
        if isinstance(listener, Heartbeats):
            return listener
    return None


def _uses_tls(client: Any) -> bool:
    # The driver has no public word for "TLS is on"; its pool options hold the
    # context it made from the URI (tls=true, or mongodb+srv://).
    return getattr(client.options.pool_options, "_ssl_context", None) is not None


def _where(address: Address) -> str:
    host, port = address
    return host if port is None else f"{host}:{port}"


async def reason(client: Any) -> str:
    """Why no server of ``client`` could be used, in one line (the causes of
    several servers joined by "; ")."""
    description = client.topology_description
    asked: str | None = description.replica_set_name
    servers = description.server_descriptions()
    heartbeats = heartbeats_of(client)
    addresses = sorted(set(servers) | (heartbeats.addresses if heartbeats else set()), key=str)
    replies = heartbeats.replies if heartbeats else {}
    tls = _uses_tls(client)
    found: dict[Address, str] = {}

    async def explain(address: Address) -> None:
        found[address] = await _server_reason(address, servers.get(address), replies.get(address), asked, tls)

    async with anyio.create_task_group() as tg:
        for address in addresses:
            tg.start_soon(explain, address)
    causes = list(dict.fromkeys(found[address] for address in addresses if found[address]))
    if causes:
        return "; ".join(causes)
    if asked is not None:
        return (
            f"no member of replica set {asked!r} answered (a server that answers with another set name, "
            "or as no replica set, is not one)"
        )
    return "no server answered"


async def _server_reason(address: Address, server: Any, hello: Hello[Any] | None, asked: str | None, tls: bool) -> str:
    where = _where(address)
    if hello is not None:
        answered = _answered(where, hello, asked)
        if answered:
            return answered
    if server is not None and server.server_type in _WRITABLE:
        return ""  # usable now: it answered after the timeout
    if server is not None and server.server_type is not SERVER_TYPE.Unknown:
        return f"{where} is a {_server_type(server.server_type)}, not the primary (no primary found)"
    error = server.error if server is not None else None
    if isinstance(error, pymongo_errors.NetworkTimeout):
        return f"no answer from {where} in time (connectTimeoutMS): a firewall dropping packets, or a server too busy"
    if isinstance(error, pymongo_errors.OperationFailure):
        return f"{where} refused the driver: {error.details.get('errmsg') if error.details else error} ({error.code})"
    return await _probe(address, tls, answered=error is None)


def _answered(where: str, hello: Hello[Any], asked: str | None) -> str:
    name = hello.replica_set_name
    if asked is not None and name is None:
        return (
            f"{where} is not a replica-set member (a standalone server or mongos), but the URI asks for "
            f"replicaSet={asked}"
        )
    if asked is not None and name != asked:
        return (
            f"replica set name mismatch: the URI asks for replicaSet={asked}, {where} answers as {name!r} "
            f"(use replicaSet={name})"
        )
    return ""


def _server_type(server_type: int) -> str:
    names = {
        SERVER_TYPE.RSSecondary: "secondary",
        SERVER_TYPE.RSArbiter: "arbiter",
        SERVER_TYPE.RSGhost: "replica-set member not yet initiated (rs.initiate())",
        SERVER_TYPE.RSOther: "hidden or delayed replica-set member",
    }
    return names.get(server_type, "server that cannot take writes")


async def _probe(address: Address, tls: bool, *, answered: bool) -> str:
    """The operating system's reason one address cannot be used; ``answered``
    False means the driver saw the connection fail, True that it is still
    waiting for the server's first answer."""
    host, port = address
    where = _where(address)
    if port is None:
        return f"cannot use {where}"  # a Unix socket: no probe here
    try:
        with anyio.fail_after(PROBE_S):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} (DNS: {exc.strerror})"
    except (UnicodeError, ValueError):  # e.g. idna's InvalidCodepoint
        return f"{host!r} is not a valid host name"
    except TimeoutError:
        return f"cannot resolve host {host!r} (DNS: no answer in {PROBE_S:g} s)"
    ip = str(infos[0][4][0])
    try:
        with anyio.fail_after(PROBE_S):
            stream = await anyio.connect_tcp(ip, port)
            await stream.aclose()
    except TimeoutError:
        return (
            f"no answer from {where} (a TCP connection found no listener in {PROBE_S:g} s: a firewall, "
            "or the wrong host)"
        )
    except OSError as exc:
        return _connect_failure(where, exc)
    if tls:
        return await _probe_tls(ip, port, where)
    if answered:
        return (
            f"{where} accepted the connection but has not answered the MongoDB handshake "
            "(is it MongoDB? does it want TLS?)"
        )
    return f"{where} accepted the connection, then the MongoDB handshake failed (does the server require TLS?)"


def _connect_failure(where: str, exc: OSError) -> str:
    cause = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno is not None), exc)
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused at {where}: nothing listens there (is the server running, on that port?)"
    return f"cannot connect to {where}: {cause.strerror or type(cause).__name__}"


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


async def _probe_tls(ip: str, port: int, where: str) -> str:
    # Not the driver's TLS settings (CA file, client certificate): only
    # whether the server speaks TLS on that port at all.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with anyio.fail_after(PROBE_S):
            stream = await anyio.connect_tcp(ip, port, tls=True, ssl_context=context, tls_standard_compatible=False)
            await stream.aclose()
    except TimeoutError:
        return (
            f"TLS handshake with {where} got no answer: the server does not seem to speak TLS there "
            "(tls=true in the URI)"
        )
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        # A plain server closing on the ClientHello, as mongod and the embedded server do.
        return (
            f"TLS handshake with {where} failed (the server closed the connection): does the server speak TLS "
            "there? (tls=true in the URI)"
        )
    except (ssl.SSLError, OSError) as exc:
        detail = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else type(exc).__name__
        return f"TLS handshake with {where} failed ({detail}): does the server speak TLS there? (tls=true in the URI)"
    return (
        f"{where} speaks TLS, but the driver's TLS handshake failed: check the CA file, the certificate and the "
        "host name (tlsCAFile, tlsCertificateKeyFile in the URI)"
    )
