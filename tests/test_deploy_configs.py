"""The deployment files a user runs: cluster.yaml (`ray up`) and serve_config.production.yaml
(`serve deploy`), checked the way Ray itself checks them before touching any machine."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from scribble_ray.app import AppArgs
from scribble_ray.preflight import check_cluster
from scribble_ray.settings import Settings
from tests.conftest import ROOT


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return config


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does first (commands._bootstrap_config): fill in, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def aws_variant() -> dict[str, Any]:
    """cluster.yaml with its commented AWS block uncommented in place of the on-prem keys."""
    text = (ROOT / "cluster.yaml").read_text()
    block = text.split("# BEGIN AWS\n", 1)[1].split("# END AWS", 1)[0]
    aws = yaml.safe_load("\n".join(line.removeprefix("# ") for line in block.splitlines()))
    config = load("cluster.yaml")
    for key in ("provider", "auth", "min_workers", "max_workers"):
        del config[key]
    return {**config, **aws}


def test_cluster_yaml_passes_rays_validation() -> None:
    config = load("cluster.yaml")
    prepared = ray_up_checks(config)
    assert prepared["provider"]["type"] == "local"
    workers = prepared["available_node_types"][prepared["head_node_type"]]
    assert workers["min_workers"] == workers["max_workers"] == 2
    assert prepared["file_mounts"] == {"~/scribble-ray": "."}
    setup = " ".join(prepared["worker_setup_commands"])
    assert setup == " ".join(prepared["head_setup_commands"])
    assert "pip install" in setup and "~/scribble-ray" in setup
    head = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head" in head and "--include-dashboard=true" in head
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(prepared["worker_start_ray_commands"])


def test_the_commented_aws_variant_passes_rays_validation() -> None:
    prepared = ray_up_checks(aws_variant())
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "worker"}
    assert prepared["available_node_types"]["worker"]["min_workers"] == 2


def test_rays_validation_catches_a_broken_config() -> None:
    """The two tests above would notice a mistake: the same check fails on a typo."""
    config = load("cluster.yaml") | {"max_wrokers": 2}
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        ray_up_checks(config)


def test_production_serve_config() -> None:
    config = load("serve_config.production.yaml")
    [app] = ServeDeploySchema.model_validate(config).applications
    assert app.import_path == "scribble_ray.app:build_app"
    args = AppArgs.model_validate(app.args).model_dump(exclude_none=True)
    replicas = args.pop("ingress_replicas")
    settings = Settings.resolve(args, env={})
    assert replicas > 1
    assert settings.store_url.startswith("postgresql://")
    assert ":" not in settings.store_url.split("://", 1)[1].split("@", 1)[0], "no password"
    assert settings.blob_url.startswith("s3://")
    assert settings.renderer == "gemini"
    assert settings.pool_max > settings.pool_min
    check_cluster(settings, alive_nodes=3)  # what the start-up check will say on a cluster
