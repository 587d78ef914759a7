"""Start-up checks that depend on where the application runs.

The embedded defaults (a SQLite file, a local artifact folder) live on one
machine's disk. On a cluster of several nodes each node would see its own, empty
copy: the coordinator would claim jobs in one database while workers elsewhere
wrote to another, and an upload stored by an ingress on one node would be missing
for a worker on the next. Refuse that at start-up instead of failing jobs later.
"""

from __future__ import annotations

import ray

from scribble_ray.auth import tokens_configured
from scribble_ray.settings import Settings


def check_cluster(settings: Settings, alive_nodes: int) -> None:
    """Raise ValueError when the settings cannot work on `alive_nodes` Ray nodes."""
    if alive_nodes <= 1:
        return
    problems = []
    if settings.store_url.startswith("sqlite:"):
        problems.append(
            f"store_url is a SQLite file ({settings.store_url}); use a PostgreSQL server "
            "every node can reach (store_url=postgresql://USER@HOST/DB)"
        )
    if settings.blob_url.startswith("file:"):
        problems.append(
            f"blob_url is a local folder ({settings.blob_url}); use a bucket every node can "
            "reach (blob_url=s3://BUCKET/PREFIX)"
        )
    if not tokens_configured(settings.api_tokens_file, settings.api_tokens):
        problems.append(
            "no API tokens are configured, so anyone who reaches a node could use the API "
            "(open mode is for one machine on 127.0.0.1); set api_tokens_file or "
            "SCRIBBLE_API_TOKENS (see README, 'Owners and tokens')"
        )
    if problems:
        raise ValueError(
            f"this Ray cluster has {alive_nodes} nodes: the job store and artifacts must "
            "be shared by all of them, and the API must not be open: "
            + "; ".join(problems)
            + " (see README, 'Running on a cluster')"
        )


def alive_nodes() -> int:
    """The number of live nodes in the Ray cluster this process is connected to.

    0 when not connected: `serve run module:build_app` calls the builder before it
    connects, and there is no cluster to count yet. Config files (`serve run
    serve_config.yaml`, `serve deploy`) build inside the cluster and are checked.
    """
    if not ray.is_initialized():
        return 0
    return sum(1 for node in ray.nodes() if node.get("Alive"))
