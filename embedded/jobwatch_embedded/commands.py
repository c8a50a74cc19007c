"""Commands the server answers itself, as a one-member replica set running
MongoDB 7.0 answers them: ``hello`` (the replica-set fields), ``buildinfo``,
``getParameter``, ``replSetGetStatus``, ``killAllSessions``, ``collMod``,
and the events DDL commands leave in the history (``create``,
``createIndexes``, ``dropIndexes``: seen by streams with showExpandedEvents).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any

import bson
from mongoeco import Timestamp

import jobwatch_embedded
from jobwatch_embedded import catalog, errors
from jobwatch_embedded.engine import PRIVATE_DB, Engine

DEFAULT_SET_NAME = jobwatch_embedded.DEFAULT_REPLICA_SET
# MongoDB 7.0's wire version (6.0: 17, 7.0: 21, 8.0: 25).
MAX_WIRE_VERSION = 21
# A constant election: this member has always been the primary.
ELECTION_ID = bson.ObjectId("7fffffff0000000000000001")
TERM = 1

#: What ``getParameter`` reports (MongoDB has hundreds; these are what tools
#: and test runners ask for). ``enableTestCommands``: the server always runs
#: MongoDB's test commands (``configureFailPoint``).
PARAMETERS: dict[str, Any] = {
    "enableTestCommands": True,
    "featureCompatibilityVersion": {"version": "7.0"},
    "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
    "requireApiVersion": False,
    "transactionLifetimeLimitSeconds": 60,
    "maxTransactionLockRequestTimeoutMillis": 5,
}
#: collMod's options the server applies; others MongoDB has are refused.
COLL_MOD_OPTIONS = frozenset({"changeStreamPreAndPostImages"})
#: Fields any command may carry (generic arguments), never collMod options.
GENERIC_ARGUMENTS = frozenset(
    {
        "$db", "lsid", "txnNumber", "autocommit", "startTransaction", "$clusterTime", "$readPreference", "writeConcern",
        "readConcern", "comment", "maxTimeMS", "apiVersion", "apiStrict", "apiDeprecationErrors", "$audit", "$client",
    }
)  # fmt: skip


@dataclass
class ReplicaSet:
    """The set this server presents itself as: one member, always primary."""

    name: str = DEFAULT_SET_NAME
    members: list[str] = field(default_factory=list)  # filled once the listener is bound
    started_s: float = field(default_factory=time.time)

    @property
    def me(self) -> str | None:
        return self.members[0] if self.members else None

    def hello(self, reply: dict[str, Any], last_write: tuple[int, int]) -> dict[str, Any]:
        """The engine's ``hello`` reply as a replica-set primary's."""
        if not reply.get("ok") or self.me is None:
            return reply
        op_time = {"ts": Timestamp(*last_write), "t": TERM}
        written = datetime.datetime.fromtimestamp(last_write[0], datetime.UTC)
        reply.update(
            setName=self.name,
            setVersion=1,
            hosts=[self.me],
            primary=self.me,
            me=self.me,
            secondary=False,
            isWritablePrimary=True,
            electionId=ELECTION_ID,
            maxWireVersion=MAX_WIRE_VERSION,
            lastWrite={
                "opTime": op_time,
                "lastWriteDate": written,
                "majorityOpTime": op_time,
                "majorityWriteDate": written,
            },
        )
        if "ismaster" in reply:
            reply["ismaster"] = True
        return reply

    def status(self, last_write: tuple[int, int]) -> dict[str, Any]:
        """``replSetGetStatus``."""
        now = datetime.datetime.now(datetime.UTC)
        op_time = {"ts": Timestamp(*last_write), "t": TERM}
        written = datetime.datetime.fromtimestamp(last_write[0], datetime.UTC)
        member = {
            "_id": 0,
            "name": self.me,
            "health": 1.0,
            "state": 1,
            "stateStr": "PRIMARY",
            "uptime": int(time.time() - self.started_s),
            "optime": op_time,
            "optimeDate": written,
            "lastAppliedWallTime": written,
            "lastDurableWallTime": written,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "infoMessage": "",
            "electionTime": Timestamp(int(self.started_s), 1),
            "electionDate": datetime.datetime.fromtimestamp(int(self.started_s), datetime.UTC),
            "configVersion": 1,
            "configTerm": TERM,
            "self": True,
            "lastHeartbeatMessage": "",
        }
        return {
            "set": self.name,
            "date": now,
            "myState": 1,
            "term": TERM,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "heartbeatIntervalMillis": 2000,
            "majorityVoteCount": 1,
            "writeMajorityCount": 1,
            "votingMembersCount": 1,
            "writableVotingMembersCount": 1,
            "optimes": {
                "lastCommittedOpTime": op_time,
                "lastCommittedWallTime": written,
                "appliedOpTime": op_time,
                "durableOpTime": op_time,
                "lastAppliedWallTime": written,
                "lastDurableWallTime": written,
            },
            "members": [member],
            "ok": 1.0,
        }


def get_parameter(command: dict[str, Any]) -> dict[str, Any]:
    """``getParameter: "*"`` (all), or ``getParameter: 1, <name>: 1, ...``."""
    if command.get("getParameter") == "*":
        return {**PARAMETERS, "ok": 1.0}
    asked = [key for key in command if key != "getParameter" and key not in GENERIC_ARGUMENTS]
    found = {key: PARAMETERS[key] for key in asked if key in PARAMETERS}
    if not found:
        raise errors.CommandError(errors.INVALID_OPTIONS, "no option found to get")
    return {**found, "ok": 1.0}


async def coll_mod(engine: Engine, db: str, command: dict[str, Any]) -> dict[str, Any]:
    """``collMod``: ``changeStreamPreAndPostImages`` on or off (or nothing),
    then a ``modify`` event."""
    name = command.get("collMod")
    if not isinstance(name, str) or not name:
        raise errors.CommandError(errors.INVALID_NAMESPACE, f"collMod: invalid collection name {name!r}")
    options = {key: value for key, value in command.items() if key != "collMod" and key not in GENERIC_ARGUMENTS}
    unsupported = sorted(set(options) - COLL_MOD_OPTIONS)
    if unsupported:
        raise errors.CommandError(
            errors.INVALID_OPTIONS,
            f"collMod option {unsupported[0]!r} is not supported by the embedded server "
            "(only changeStreamPreAndPostImages)",
        )
    await engine.flush()
    collection = engine.catalog.get(db, name)
    if collection is None or collection.view:
        raise errors.CommandError(errors.NAMESPACE_NOT_FOUND, f"ns does not exist: {db}.{name}")
    if "changeStreamPreAndPostImages" in options:
        spec = options["changeStreamPreAndPostImages"]
        if not isinstance(spec, dict) or not isinstance(spec.get("enabled"), bool):
            raise errors.CommandError(
                errors.TYPE_MISMATCH, "changeStreamPreAndPostImages must be a document {enabled: <bool>}"
            )
        await engine.catalog.store_images(engine.client, PRIVATE_DB, db, name, catalog.images_enabled(options))
    engine.record_ddl("modify", db, name, options)
    return {"ok": 1.0}
