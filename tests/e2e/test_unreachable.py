"""An unreachable server's error names the cause in one line, as mongosh would:
connection refused, DNS, a replica set name mismatch (the name asked and the
name found), TLS, no answer, authentication, no primary. Each cause is made
for real here: a closed port, an unresolvable host, the embedded server asked
for another set name or spoken TLS to, a listener that never answers, and
MockupDB playing MongoDB's replies."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from mockupdb import MockupDB, Request
from pymongo import MongoClient

from tests.e2e.conftest import CliMongo
from watcher.cli import exits
from watcher.cli import main as cli

#: Where the cause is found without the server's answer (refused, DNS, silence).
TIMEOUT_MS = "1500"
#: Where the cause is in the server's hello reply, which the driver's monitor
#: must have had before the selection gives up: a loaded machine may take
#: more than a second to start a connection and answer. Each such test waits
#: the whole timeout (a server that answers as the wrong kind is never
#: selected), so it stays a few seconds, not the driver's 30.
ANSWER_TIMEOUT_MS = "5000"


def run(uri: str, capsys: pytest.CaptureFixture[str], *extra: str, timeout_ms: str = TIMEOUT_MS) -> tuple[int, str]:
    argv = ["status", "--uri", uri, "--server-selection-timeout-ms", timeout_ms, "--log-level", "WARNING", *extra]
    code = cli.main(argv, out=lambda _: None)
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobwatch: "), err
    return lines[0]


def host_port(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0].split(",")[0].rpartition("@")[2]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the test connects


def test_connection_refused(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(f"mongodb://127.0.0.1:{closed_port}/?directConnection=true", capsys)
    assert code == exits.UNREACHABLE
    assert f"connection refused at 127.0.0.1:{closed_port}: nothing listens there" in one_line(err)
    assert f"(no usable server within {TIMEOUT_MS} ms)" in err


def test_an_unresolvable_host(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run("mongodb://no-such-host.invalid:27017/?directConnection=true", capsys)
    assert code == exits.UNREACHABLE
    assert "cannot resolve host 'no-such-host.invalid' (DNS: " in one_line(err)


def test_a_replica_set_name_mismatch_names_both_names(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    where = host_port(cli_mongo.uri)
    direct: MongoClient[dict[str, Any]]
    with MongoClient(f"mongodb://{where}/?directConnection=true") as direct:
        found = direct.admin.command("hello")["setName"]
    asked = f"{found}-not"
    code, err = run(f"mongodb://{where}/?replicaSet={asked}", capsys, timeout_ms=ANSWER_TIMEOUT_MS)
    assert code == exits.UNREACHABLE
    line = one_line(err)
    assert f"replica set name mismatch: the URI asks for replicaSet={asked}, {where} answers as {found!r}" in line
    assert f"(use replicaSet={found})" in line


def test_tls_against_a_plain_port(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(f"mongodb://{host_port(cli_mongo.uri)}/?directConnection=true&tls=true&tlsInsecure=true", capsys)
    assert code == exits.UNREACHABLE
    assert f"TLS handshake with {host_port(cli_mongo.uri)}" in one_line(err) and "tls=true in the URI" in err


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes the TCP
    handshake, and nothing ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_a_listener_that_never_answers(silent_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(f"mongodb://127.0.0.1:{silent_port}/?directConnection=true", capsys)
    assert code == exits.UNREACHABLE
    line = one_line(err)
    assert f"127.0.0.1:{silent_port} accepted the connection but has not answered the MongoDB handshake" in line


def mockup(hello: dict[str, Any]) -> Iterator[MockupDB]:
    mock = MockupDB(auto_ismaster={"minWireVersion": 0, "maxWireVersion": 21, **hello})
    mock.run()
    try:
        yield mock
    finally:
        mock.stop()


def _auth_refused(request: Request) -> bool:
    if "saslStart" in request.doc:  # MongoDB's reply to a wrong password
        refused = {"ok": 0, "errmsg": "Authentication failed.", "code": 18, "codeName": "AuthenticationFailed"}
        return bool(request.replies(refused))
    if "endSessions" in request.doc:
        return bool(request.ok())
    return False


def test_authentication_failure_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    primary = {"ismaster": True, "isWritablePrimary": True, "setName": "rs0", "saslSupportedMechs": ["SCRAM-SHA-256"]}
    for mock in mockup(primary):
        mock.autoresponds(_auth_refused)
        options = "directConnection=true&authMechanism=SCRAM-SHA-256"
        uri = f"mongodb://jobwatch:wrong-password@{mock.address_string}/?{options}"
        code, err = run(uri, capsys, timeout_ms=ANSWER_TIMEOUT_MS)
    assert code == exits.USAGE
    line = one_line(err)
    assert "authentication failed (AuthenticationFailed: Authentication failed.)" in line and "authSource" in line
    assert "wrong-password" not in err


def test_a_standalone_server_asked_for_a_replica_set(capsys: pytest.CaptureFixture[str]) -> None:
    for mock in mockup({"ismaster": True, "isWritablePrimary": True}):
        code, err = run(f"mongodb://{mock.address_string}/?replicaSet=rs0", capsys, timeout_ms=ANSWER_TIMEOUT_MS)
    assert code == exits.UNREACHABLE
    line = one_line(err)
    assert "is not a replica-set member (a standalone server or mongos), but the URI asks for replicaSet=rs0" in line


def test_only_a_secondary(capsys: pytest.CaptureFixture[str]) -> None:
    for mock in mockup({"ismaster": False, "isWritablePrimary": False, "secondary": True, "setName": "rs0"}):
        where = mock.address_string
        mock.autoresponds(
            {"hello": 1},
            ismaster=False,
            isWritablePrimary=False,
            secondary=True,
            setName="rs0",
            hosts=[where],
            me=where,
            minWireVersion=0,
            maxWireVersion=21,
        )
        code, err = run(f"mongodb://{where}/?replicaSet=rs0", capsys, timeout_ms=ANSWER_TIMEOUT_MS)
    assert code == exits.UNREACHABLE
    assert f"{where} is a secondary, not the primary (no primary found)" in one_line(err)


def test_debug_adds_the_drivers_own_error(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(f"mongodb://127.0.0.1:{closed_port}/?directConnection=true", capsys, "--debug")
    assert code == exits.UNREACHABLE
    assert "ServerSelectionTimeoutError" in err and "Topology Description" in err  # the driver's own words
    assert err.rstrip().splitlines()[-1].startswith("jobwatch: MongoDB at ")  # then the one line
