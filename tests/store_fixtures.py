"""Job store fixtures shared by the store contract and race tests.

Every test gets a database nobody else can see: a fresh file under `tmp_path` for
SQLite, a fresh schema (selected through `search_path` in the URL) for PostgreSQL.
PostgreSQL is required: when it is down the fixture errors, it never skips.
"""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scribble_ray.jobs import JobOptions, Kind, Lane, NewJob
from scribble_ray.store import JobStore, open_store

PG_URL = os.environ.get("SCRIBBLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")
EXPIRED = -1.0  # a lease that has already expired by the database clock when granted


@dataclass
class StoreTarget:
    """One isolated database and the store instances opened on it."""

    backend: str
    url: str
    sqlite_path: Path | None = None
    opened: list[JobStore] = field(default_factory=list)

    def open(self, *, migrate: bool = True) -> JobStore:
        """A new store instance (its own connections) on this database."""
        store = open_store(self.url, migrate=migrate)
        self.opened.append(store)
        return store

    def execute(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Raw SQL on a separate connection (`:name` placeholders, autocommit)."""
        if self.sqlite_path is not None:
            with sqlite3.connect(self.sqlite_path, timeout=30) as conn:
                return conn.execute(sql, params).fetchall()
        pg_sql = re.sub(r"(?<![:\w]):([a-z_]+)\b", r"%(\1)s", sql)
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(pg_sql, params)  # type: ignore[call-overload]
            return list(cur.fetchall()) if cur.description else []

    def backdate(self, job_id: str, seconds: float) -> None:
        """Move a job's created_at into the past (to give jobs distinct, known times)."""
        if self.sqlite_path is not None:
            sql = "UPDATE jobs SET created_at = created_at - :s"
        else:
            sql = "UPDATE jobs SET created_at = created_at - make_interval(secs => :s)"
        self.execute(f"{sql} WHERE id = :id", s=seconds, id=job_id)

    def shift_attempt_start(self, job_id: str, attempt: int, seconds: float) -> None:
        """Move a ledger row's started_at by `seconds` (negative: earlier)."""
        if self.sqlite_path is not None:
            sql = "UPDATE attempts SET started_at = started_at + :s"
        else:
            sql = "UPDATE attempts SET started_at = started_at + make_interval(secs => :s)"
        self.execute(f"{sql} WHERE job_id = :id AND attempt = :a", s=seconds, id=job_id, a=attempt)

    def close_all(self) -> None:
        while self.opened:
            self.opened.pop().close()


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # fail loudly: these tests are not optional
        raise RuntimeError(
            f"PostgreSQL is required for the store tests and is not reachable at {PG_URL} "
            "(set SCRIBBLE_TEST_POSTGRES_URL to point elsewhere)"
        ) from exc


def _with_search_path(url: str, schema: str) -> str:
    """Point every connection at `schema`. Commits skip the WAL flush wait: that only
    matters for crash durability, not for locking or isolation, and keeps races fast."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    """An empty, unmigrated, private database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"
        target = StoreTarget("sqlite", f"sqlite:///{path}", sqlite_path=path)
        try:
            yield target
        finally:
            target.close_all()
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _pg_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    target = StoreTarget("postgres", _with_search_path(PG_URL, schema))
    try:
        yield target
    finally:
        target.close_all()
        with _pg_admin() as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def store(store_target: StoreTarget) -> JobStore:
    """A migrated store on a private database (closed at teardown)."""
    return store_target.open()


def new_job(
    *,
    owner: str = "local",
    lane: Lane = Lane.INTERACTIVE,
    max_attempts: int = 3,
    idempotency_key: str | None = None,
    prompt: str = "a cat",
) -> NewJob:
    return NewJob(
        kind=Kind.TEXT,
        options=JobOptions(),
        owner=owner,
        lane=lane,
        prompt=prompt,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
    )


def seed_jobs(store: JobStore, n: int, **kwargs: Any) -> list[str]:
    """Create `n` queued jobs through the store; their ids in creation order."""
    return [store.create(new_job(**kwargs))[0].id for _ in range(n)]
