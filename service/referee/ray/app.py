"""The typed application builder: one YAML config (`import_path` + `args`) builds the app."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from referee.config import Settings, load_settings
from referee.pipeline.nodes import has_group_steps

__all__ = ["DeploymentOptions", "RayAppArgs", "build_app", "needs_group_owner", "run_blocking"]

# Kinds that run in their own deployment (a model each); the rest run in the ingress.
MODEL_KINDS = frozenset({"classifier", "prm", "similarity", "likelihood", "judge"})


class DeploymentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_replicas: int | None = Field(default=1, ge=1)
    autoscaling_config: dict[str, Any] | None = None
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    max_ongoing_requests: int = Field(default=64, gt=0)

    def serve_options(self) -> dict[str, Any]:
        options = self.model_dump(exclude_none=True)
        if self.autoscaling_config is not None:
            options.pop("num_replicas", None)
        return options


class RayAppArgs(BaseModel):
    """``args`` of the Serve application: the Referee config (inline or a path) and the
    deployment options of the ingress and of each model scorer."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] | None = None
    config_path: str | None = None
    ingress: DeploymentOptions = Field(default_factory=DeploymentOptions)
    scorers: dict[str, DeploymentOptions] = Field(
        default_factory=dict, description="Per model scorer; unlisted ones get the defaults."
    )

    @model_validator(mode="after")
    def _one_config(self) -> RayAppArgs:
        if (self.config is None) == (self.config_path is None):
            raise ValueError("give exactly one of `config` (inline) or `config_path`")
        return self

    def referee_config(self) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        assert self.config_path is not None
        data = yaml.safe_load(Path(self.config_path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path}: not a mapping")
        return data


def build_app(args: dict[str, Any]) -> Any:
    """Serve application builder (``referee.ray.app:build_app``)."""
    from ray import serve

    from referee.ray._deployments import GroupOwnerReplica, IngressReplica, ScorerReplica

    parsed = RayAppArgs.model_validate(args)
    config = parsed.referee_config()
    settings = load_settings(data=config)  # fails here, with field paths, if invalid
    unknown = set(parsed.scorers) - set(settings.scorers)
    if unknown:
        raise ValueError(f"args.scorers names unknown scorers: {sorted(unknown)}")
    handles = {}
    for name, cfg in settings.scorers.items():
        if cfg.kind not in MODEL_KINDS:
            continue
        options = parsed.scorers.get(name, DeploymentOptions()).serve_options()
        deployment: Any = serve.deployment(ScorerReplica, name=f"scorer-{name}", **options)
        handles[name] = deployment.bind(config, name)
    ingress: Any = serve.deployment(serve.ingress()(IngressReplica), name="ingress",
                               **parsed.ingress.serve_options())  # fmt: skip
    groups = None
    if needs_group_owner(settings):  # one replica owns every group being assembled
        owner: Any = serve.deployment(GroupOwnerReplica, name="groups", num_replicas=1,
                                      max_ongoing_requests=100_000)  # fmt: skip
        groups = owner.bind(config, handles)
    return ingress.bind(config, handles, groups)


def needs_group_owner(settings: Settings) -> bool:
    """Whether a pipeline may assemble groups: group steps in its tree, or a scorer that
    compares an item with its group."""
    if any(has_group_steps(p.reward) for p in settings.pipelines.values()):
        return True
    return any(
        cfg.options.get("group_mode", "none") != "none" or cfg.options.get("against") == "group"
        for cfg in settings.scorers.values()
    )


def run_blocking(settings: Settings, config_path: Path | None, host: str, port: int) -> None:
    """`referee serve --ray`: the app on the Ray cluster at RAY_ADDRESS (or a local one),
    HTTP on host:port, until interrupted."""
    import ray
    from ray import serve

    # SIGINT and SIGTERM end the run, whatever this process inherited (a parent that
    # ignores SIGINT passes that on through exec: Ctrl-C and `kill -INT` then did nothing)
    # and for SIGTERM too (Kubernetes' stop signal, which would otherwise kill the process
    # on the spot and leave a local cluster's processes behind).
    def interrupted(signum: int, _frame: object) -> None:
        print(f"referee: {signal.Signals(signum).name}: shutting down", file=sys.stderr,
              flush=True)  # fmt: skip
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    ray.init()  # RAY_ADDRESS, or a new local cluster (shut down at exit)
    serve.start(http_options={"host": host, "port": port})
    args: dict[str, Any] = (
        {"config_path": str(config_path)} if config_path is not None
        else {"config": settings.model_dump(mode="json")}
    )  # fmt: skip
    serve.run(build_app(args), name="referee", route_prefix="/", blocking=True)
