"""The shared snapshot pointer (state/snapshot_versions.py) on SQLite and PostgreSQL: advanced
by compare-and-set only while the publishing run holds its lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ebbtide.errors import LeaseLostError
from ebbtide.state.schema import leases
from ebbtide.state.snapshot_versions import SnapshotVersions
from ebbtide.state.store import SqlStateStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStateStore]:
    if request.param == "sqlite":
        state = SqlStateStore("sqlite:///.ebbtide/state.db", tmp_path)
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        state = SqlStateStore(f"{dsn}?options=-csearch_path%3D{schema}", tmp_path)
    yield state
    state.dispose()


def test_a_mapping_never_published_has_no_version(store: SqlStateStore) -> None:
    pointer = SnapshotVersions(store.engine).current("m")
    assert (pointer.version, pointer.through_run, pointer.generation) == (None, 0, 0)


def test_the_lease_holder_advances_the_pointer_from_what_it_saw(store: SqlStateStore) -> None:
    versions = SnapshotVersions(store.engine)
    _, lease = store.start_run("m", "manual", 60)
    first = versions.advance(lease, versions.current("m"), "v1", 0)
    second = versions.advance(lease, first, "v2", lease.run_id)
    assert versions.current("m") == second
    assert (second.version, second.through_run, second.generation) == ("v2", lease.run_id, 2)
    assert versions.current("other").generation == 0  # per mapping


def test_a_publisher_that_saw_an_older_version_is_refused(store: SqlStateStore) -> None:
    versions = SnapshotVersions(store.engine)
    _, lease = store.start_run("m", "manual", 60)
    seen = versions.current("m")
    now = versions.advance(lease, seen, "v1", 1)
    for stale in (seen, versions.current("m").__class__("m", "v0", 0, 5)):
        with pytest.raises(LeaseLostError, match="another run published"):
            versions.advance(lease, stale, "late", 1)
    assert versions.current("m") == now


def test_a_run_that_lost_its_lease_cannot_publish(store: SqlStateStore) -> None:
    versions = SnapshotVersions(store.engine)
    _, lease = store.start_run("m", "manual", 60)
    published = versions.advance(lease, versions.current("m"), "v1", 1)
    with store.engine.begin() as conn:  # taken over by another machine's run
        conn.execute(sa.update(leases).where(leases.c.mapping == "m").values(token="other"))
    with pytest.raises(LeaseLostError, match="lost its lease.*v2 was not made current"):
        versions.advance(lease, published, "v2", 2)
    assert versions.current("m") == published

    _, fresh = store.start_run("n", "manual", 60)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(leases).where(leases.c.mapping == "n"))
    with pytest.raises(LeaseLostError):  # not even the first version
        versions.advance(fresh, versions.current("n"), "v1", 0)
    assert versions.current("n").generation == 0
