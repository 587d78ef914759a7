"""Job stores, chosen by URL: sqlite:///PATH (embedded default) or postgresql://..."""

from __future__ import annotations

from scribble_ray.store.base import JobStore


def open_store(url: str, *, migrate: bool = True) -> JobStore:
    """Open the store a URL names and bring its schema up to date."""
    store: JobStore
    if url.startswith("sqlite:///"):
        from scribble_ray.store.sqlite import SqliteJobStore

        store = SqliteJobStore(url.removeprefix("sqlite:///"))
    elif url.startswith(("postgresql://", "postgres://")):
        from scribble_ray.store.postgres import PostgresJobStore

        store = PostgresJobStore(url)
    else:
        raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://...")
    if migrate:
        store.migrate()
    return store


__all__ = ["JobStore", "open_store"]
