"""The lease rules on a real server (the backend's): take when free, term + 1,
renew only by the holder of that term before expiry, release, fenced saves,
racing upserts, documents of any shape, the heartbeats of the instances. The
same rules the fake in ``tests/support/leases.py`` follows, so the elector's
fake-clock tests (``tests/unit/watcher/test_lease_machine.py``) hold here.

Expiry is judged on the server's clock: these tests use a one-second lease
and wait for it to run out (``wait_until``), never a bare sleep.
"""

from __future__ import annotations

import datetime as dt

import anyio
import pytest

from tests.support.backends import Backend
from tests.support.harness import wait_until
from watcher.storage import errors
from watcher.storage.lease import Grant, MongoLeases
from watcher.storage.members import MongoMembers
from watcher.storage.position import MongoPositionStore

LEASE_S = 1.0


def leases(mongo: Backend, holder: str, *, partitions: int = 1, lease_s: float = LEASE_S) -> MongoLeases:
    return MongoLeases(
        mongo.db.jobwatch_positions, watcher="default", partitions=partitions, holder=holder, lease_s=lease_s
    )


def positions(mongo: Backend, grant: Grant) -> MongoPositionStore:
    return MongoPositionStore(mongo.db.jobwatch_positions, grant, lease_s=LEASE_S)


async def taken_by(candidate: MongoLeases, partition: int = 0) -> Grant:
    """Tries until the lease runs out on the server and ``candidate`` takes it."""
    taken: list[Grant] = []

    async def took() -> bool:
        grant = await candidate.take(partition)
        if grant is not None:
            taken.append(grant)
        return bool(taken)

    await wait_until(took, what="the lease to run out and be taken", deadline_s=10)
    return taken[0]


async def test_a_free_lease_is_taken_once_and_each_take_is_a_new_term(mongo: Backend) -> None:
    a, b = leases(mongo, "a"), leases(mongo, "b")
    first = await a.take(0)
    assert first is not None and first.term == 1 and first.vacant_s is None and first.doc_id == "default"
    assert await b.take(0) is None  # held
    assert await a.renew(first) is True
    assert await a.release(first) is True
    second = await b.take(0)
    assert second is not None and second.term == 2 and second.previous_holder is None  # released: no holder left
    assert second.vacant_s is not None and 0 <= second.vacant_s < 5
    assert await a.renew(first) is False and await a.release(first) is False  # term 1 is over


async def test_a_lease_that_ran_out_is_taken_in_the_next_term_and_never_renewed(mongo: Backend) -> None:
    a, b = leases(mongo, "a"), leases(mongo, "b")
    first = await a.take(0)
    assert first is not None
    second = await taken_by(b)
    assert (
        second.term == 2
        and second.previous_holder == "a"
        and second.vacant_s is not None
        and second.vacant_s >= LEASE_S * 0.9
    )
    assert await a.renew(first) is False


async def test_an_expired_lease_nobody_took_is_not_renewed_but_taken_again(mongo: Backend) -> None:
    a = leases(mongo, "a")
    first = await a.take(0)
    assert first is not None

    async def ran_out() -> bool:  # judged by the server, on its clock
        return (
            await mongo.db.jobwatch_positions.count_documents(
                {"_id": "default", "$expr": {"$lte": ["$expiresAt", "$$NOW"]}}
            )
            == 1
        )

    await wait_until(ran_out, what="the lease to run out", deadline_s=10)
    assert await a.renew(first) is False
    again = await a.take(0)
    assert again is not None and again.term == 2


async def test_racing_takes_of_a_new_lease_give_one_holder(mongo: Backend) -> None:
    contenders = [leases(mongo, f"i{n}") for n in range(6)]
    grants: list[Grant | None] = []

    async def take(lease: MongoLeases) -> None:
        grants.append(await lease.take(0))  # the losers' upserts collide (11000): None, not an error

    async with anyio.create_task_group() as tg:
        for lease in contenders:
            tg.start_soon(take, lease)
    won = [g for g in grants if g is not None]
    assert len(won) == 1 and won[0].term == 1
    doc = await mongo.db.jobwatch_positions.find_one({"_id": "default"})
    assert doc is not None and doc["holder"] == won[0].holder


async def test_saves_are_fenced_by_holder_and_term(mongo: Backend) -> None:
    a, b = leases(mongo, "a"), leases(mongo, "b")
    first = await a.take(0)
    assert first is not None
    await positions(mongo, first).save({"_data": "01"})
    second = await taken_by(b)
    with pytest.raises(errors.Deposed):
        await positions(mongo, first).save({"_data": "00"})  # the paused holder wakes: its save matches nothing
    with pytest.raises(errors.Deposed):
        await positions(mongo, first).heartbeat()
    saved = await positions(mongo, second).load()
    assert saved is not None and saved.token == {"_data": "01"}  # the new holder resumes from the last save
    await positions(mongo, second).save({"_data": "02"})
    doc = await mongo.db.jobwatch_positions.find_one({"_id": "default"})
    assert doc is not None and doc["token"] == {"_data": "02"} and doc["tokenTerm"] == 2


async def test_release_all_frees_every_lease_of_the_holder(mongo: Backend) -> None:
    a, b = leases(mongo, "a", partitions=3, lease_s=60), leases(mongo, "b", partitions=3, lease_s=60)
    for partition in range(3):
        assert await a.take(partition) is not None
    assert await b.take(1) is None
    assert await a.release_all() == 3
    assert [g is not None for g in [await b.take(k) for k in range(3)]] == [True, True, True]


async def test_documents_of_any_shape_are_taken_over(mongo: Backend) -> None:
    # An older version's document (a position, no lease), and one another program mangled.
    now = dt.datetime.now(dt.UTC)
    await mongo.db.jobwatch_positions.insert_many(
        [
            {"_id": "default", "token": {"_data": "legacy"}, "savedAt": now, "heartbeatAt": now, "state": {}},
            {"_id": "default:1/3", "holder": 5, "term": "three", "expiresAt": "soon", "lastHeldAt": 7},
            {"_id": "default:2/3", "holder": "gone", "term": float("nan"), "expiresAt": now - dt.timedelta(hours=1)},
        ]
    )
    legacy = await leases(mongo, "a").take(0)
    assert legacy is not None and legacy.term == 1
    saved = await positions(mongo, legacy).load()
    assert saved is not None and saved.token == {"_data": "legacy"}  # an upgrade resumes where it was
    three = leases(mongo, "a", partitions=3)
    mangled, expired = await three.take(1), await three.take(2)
    assert mangled is not None and mangled.term == 1 and mangled.vacant_s is None
    assert expired is not None and expired.term == 1 and expired.previous_holder == "gone"


async def test_a_new_partitioning_resumes_from_the_oldest_token_of_the_previous_one(mongo: Backend) -> None:
    old = leases(mongo, "old", partitions=2, lease_s=60)
    for partition, token in ((0, "0a"), (1, "0b")):
        grant = await old.take(partition)
        assert grant is not None
        await positions(mongo, grant).save({"_data": token})
    # 0a saved a minute before 0b (millisecond timestamps could tie).
    await mongo.db.jobwatch_positions.update_one(
        {"_id": "default:0/2"}, {"$set": {"savedAt": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)}}
    )
    await old.release_all()
    new = leases(mongo, "new", partitions=3)
    grant = await new.take(2)
    assert grant is not None
    saved = await positions(mongo, grant).load()
    assert saved is not None and saved.token == {"_data": "0a"}  # every old partition was handled up to it


async def test_no_token_when_a_partition_of_the_previous_partitioning_saved_none(mongo: Backend) -> None:
    old = leases(mongo, "old", partitions=2, lease_s=60)
    grant = await old.take(0)
    assert grant is not None and await old.take(1) is not None
    await positions(mongo, grant).save({"_data": "0a"})  # partition 1 never saved: only a full sweep covers its jobs
    await old.release_all()
    new = await leases(mongo, "new", partitions=3).take(0)
    assert new is not None
    saved = await positions(mongo, new).load()
    assert saved is None or saved.token is None


async def test_heartbeats_are_judged_on_the_servers_clock_and_read_tolerantly(mongo: Backend) -> None:
    coll = mongo.db.jobwatch_positions
    a = MongoMembers(coll, watcher="default", instance="host:1:aa")
    await a.beat(
        {
            "host": "host",
            "pid": 1,
            "version": "1.0",
            "role": "standby",
            "partitions": 1,
            "jobTypes": [],
            "held": [],
            "leaseS": 10.0,
            "renewS": 2.0,
            "state": {"pendingJobs": 0, "note": "$notAnOperator"},
        }
    )
    await coll.insert_many(
        [
            {"_id": "default@odd", "kind": "instance", "watcher": "default", "instance": 12, "heartbeatAt": "now"},
            {
                "_id": "default@old",
                "kind": "instance",
                "watcher": "default",
                "instance": "old",
                "heartbeatAt": dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
            },
            {
                "_id": "other@x",
                "kind": "instance",
                "watcher": "other",
                "instance": "x",
                "heartbeatAt": dt.datetime.now(dt.UTC),
            },
        ]
    )
    seen = {m.instance: m for m in await a.all()}
    assert set(seen) == {"host:1:aa", "old"}
    mine = seen["host:1:aa"]
    assert mine.alive(10) and mine.heartbeat_age_s is not None and mine.heartbeat_age_s < 5 and mine.role == "standby"
    assert mine.state == {"pendingJobs": 0, "note": "$notAnOperator"}  # values are data, never operators
    assert not seen["old"].alive(10)
    assert await a.prune() == 2  # the two-hour-old one and the one with no date
    await a.leave()
    assert [m.instance for m in await a.all()] == []
