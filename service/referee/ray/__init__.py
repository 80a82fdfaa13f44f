"""Referee on Ray Serve: the same engine and scorers, one deployment per model scorer.

`serve run referee.ray.app:build_app config_path=deploy/configs/x.yaml` or a Serve config
with ``import_path: referee.ray.app:build_app`` and ``args``. Ray is imported only here.
"""

from referee.ray.app import RayAppArgs, build_app

__all__ = ["RayAppArgs", "build_app"]
