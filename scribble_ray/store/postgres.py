"""PostgreSQL job store through psycopg 3 and a connection pool."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from scribble_ray.store.base import JobStore, Row, Success, load_queries

# `:name` placeholders become psycopg's `%(name)s`; `::type` casts are left alone.
QUERIES = {
    name: re.sub(r"(?<![:\w]):([a-z_]+)\b", r"%(\1)s", sql)
    for name, sql in load_queries("postgres.sql", "clock_timestamp()").items()
}
log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "scribble_jobs"  # the jobs_notify trigger in postgres.sql
MIGRATION_LOCK = 0x5C1B  # pg_advisory_xact_lock key: one migrator at a time


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def run(self, name: str, **params: Any) -> list[Row]:
        sql = QUERIES[name]
        if name.startswith("migration_"):
            self._conn.execute(sql.replace("%%", "%"))  # type: ignore[arg-type]
            return []
        cur = self._conn.execute(sql, params)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


class PostgresJobStore(JobStore):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        super().__init__()
        self.url = url
        self.pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": False},
            check=ConnectionPool.check_connection,  # drop connections the server killed
            open=True,
            name="scribble-ray",
        )

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        with self.pool.connection() as conn:  # commits on success, rolls back on error
            yield _PgTx(conn)

    def close(self) -> None:
        self.pool.close()

    def listen(self, on_notify: Callable[[], None], stop: threading.Event) -> None:
        """Call `on_notify` whenever a job is inserted, by us or any other service.

        Runs until `stop` is set. A dropped connection is re-opened and LISTEN
        re-issued; `on_notify` is also called after each (re)connect, since
        notifications sent while disconnected are lost.
        """
        delay = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute("LISTEN " + NOTIFY_CHANNEL)
                    delay = 0.1
                    on_notify()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            on_notify()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _lock_for_migration(self, tx: Any) -> None:
        tx._conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def _succeed(self, tx: Any, successes: Sequence[Success]) -> set[tuple[str, int]]:
        rows = tx.run(
            "succeed_many",
            ids=[s.job_id for s in successes],
            attempts=[s.attempt for s in successes],
            artifacts=[self._json(s.artifacts) for s in successes],
            timings=[self._json(s.timings) for s in successes],
        )
        return {(r["id"], int(r["attempt"])) for r in rows}

    def _json(self, value: Any) -> Any:
        return Jsonb(value)
