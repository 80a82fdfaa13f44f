"""The Ray Serve application's typed args (no Ray needed to check them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from referee.config import load_settings
from referee.ray.app import DeploymentOptions, RayAppArgs

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_serve_config_builds_valid_args_and_a_valid_referee_config() -> None:
    serve_config = yaml.safe_load((ROOT / "deploy/ray/serve.yaml").read_text())
    (app,) = serve_config["applications"]
    assert app["import_path"] == "referee.ray.app:build_app"
    args = RayAppArgs.model_validate(app["args"])
    assert args.config_path is not None
    args.config_path = str(ROOT / args.config_path)
    load_settings(data=args.referee_config(), environ={})


def test_args_need_exactly_one_config_and_known_option_names() -> None:
    with pytest.raises(ValidationError, match="exactly one of `config`"):
        RayAppArgs.model_validate({})
    with pytest.raises(ValidationError, match="exactly one of `config`"):
        RayAppArgs.model_validate({"config": {}, "config_path": "x.yaml"})
    with pytest.raises(ValidationError, match="num_replica"):
        RayAppArgs.model_validate({"config": {}, "ingress": {"num_replica": 2}})


def test_autoscaling_replaces_a_fixed_replica_count() -> None:
    fixed = DeploymentOptions(num_replicas=3, ray_actor_options={"num_gpus": 0.5})
    assert fixed.serve_options()["num_replicas"] == 3
    scaled = DeploymentOptions(autoscaling_config={"min_replicas": 1, "max_replicas": 4})
    assert "num_replicas" not in scaled.serve_options()
