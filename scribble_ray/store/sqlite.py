"""SQLite job store: the embedded default. WAL mode; writers serialize on BEGIN IMMEDIATE."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scribble_ray.jobs import Job, Outcome
from scribble_ray.store.base import JobStore, Row, load_queries

# Whole milliseconds (SQLite's clock resolution): an exact decimal that survives the
# round trip through a Python datetime, so `created_at < :before` cursors are exact.
NOW = "(round((julianday('now') - 2440587.5) * 86400000.0) / 1000.0)"
QUERIES = load_queries("sqlite.sql", NOW)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def run(self, name: str, **params: Any) -> list[Row]:
        sql = QUERIES[name]
        if name.startswith("migration_"):
            # executescript() would commit first; run the statements one by one instead.
            for statement in filter(str.strip, sql.split(";\n")):
                self._conn.execute(statement)
            return []
        return self._conn.execute(sql, params).fetchall()


class SqliteJobStore(JobStore):
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per store, guarded by a lock: SQLite allows one writer at a
        # time anyway, and other processes wait on the file lock (busy timeout).
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._enable_wal(busy_timeout_s)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()

    def _enable_wal(self, timeout_s: float) -> None:
        """Switch to WAL, retrying while another connection holds the file.

        Converting a fresh file to WAL fails with SQLITE_BUSY at once (the busy
        handler is bypassed) when another process opens it at the same moment.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        with self._lock:
            # IMMEDIATE takes the write lock up front: no read-then-upgrade deadlocks.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _ledger_open(self, tx: Any, job: Job, worker: str, node: str | None) -> None:
        tx.run("open_attempt", id=job.id, attempt=job.attempt, worker=worker, node=node)

    def _ledger_close(
        self, tx: Any, job_id: str, attempt: int, outcome: Outcome, message: str | None
    ) -> None:
        tx.run("close_attempt", id=job_id, attempt=attempt, outcome=outcome.value, message=message)

    def _time(self, value: Any) -> Any:
        return value.timestamp() if value is not None else None
