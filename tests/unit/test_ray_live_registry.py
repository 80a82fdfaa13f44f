"""The live-reload registry's rules (referee.ray._live.Registry, a plain class that runs
as a Ray actor; the whole protocol runs on Ray in tests/e2e/test_ray_live_reload.py)."""

from __future__ import annotations

import pytest

from referee.ray import _live
from referee.ray._live import Registry


def change(**revisions: int) -> dict[str, object]:
    return {"config": {}, "rebuild": sorted(revisions), "revisions": revisions}


def test_a_stage_waits_for_every_live_replica_of_the_changed_scorer_and_shows_failures() -> None:
    registry = Registry()
    for replica, scorer in (("a", "rm"), ("b", "rm"), ("c", "other")):
        registry.sync(replica, "scorer", scorer, 0)
    registry.sync("i", "ingress", None, 0)
    generation = registry.stage(0, change(rm=1))
    assert generation == 1
    assert registry.stage_status(1, ["rm"]) == {"waiting": ["a", "b"], "errors": {}}
    registry.sync("a", "scorer", "rm", 0, (1, None))
    registry.sync("b", "scorer", "rm", 0, (1, "OSError: no weights"))
    assert registry.stage_status(1, ["rm"]) == {"waiting": [],
                                                "errors": {"b": "rm: OSError: no weights"}}  # fmt: skip


def test_one_change_at_a_time_and_only_from_the_generation_it_was_made_against() -> None:
    registry = Registry()
    assert registry.stage(0, change(rm=1)) == 1
    assert "in progress" in str(registry.stage(0, change(rm=1)))
    registry.abort(1)
    assert registry.sync("i", "ingress", None, 0)["staged"] is None
    assert registry.stage(0, change(rm=1)) == 1
    assert registry.commit(1) and not registry.commit(1)
    assert "another reload" in str(registry.stage(0, change(rm=1)))
    view = registry.sync("i", "ingress", None, 0)
    assert view["generation"] == 1 and view["committed"]["revisions"] == {"rm": 1}
    assert registry.not_applied(1) == ["i"]
    registry.sync("i", "ingress", None, 1)
    assert registry.not_applied(1) == []


def test_a_replica_not_heard_from_is_not_waited_on(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    now = [100.0]
    monkeypatch.setattr(_live.time, "monotonic", lambda: now[0])
    registry.sync("dead", "scorer", "rm", 0)
    registry.sync("i", "ingress", None, 0)
    registry.stage(0, change(rm=1))
    now[0] += _live.LIVE_S + 1
    registry.sync("alive", "scorer", "rm", 0, (1, None))
    assert registry.stage_status(1, ["rm"]) == {"waiting": [], "errors": {}}
    assert registry.not_applied(1) == []  # the ingress went quiet too


def test_a_restarted_registry_learns_the_committed_change_back() -> None:
    registry = Registry()
    committed = {**change(rm=3), "generation": 3}
    registry.seed(committed)
    assert registry.sync("i", "ingress", None, 3)["committed"] == committed
    registry.seed({**change(rm=2), "generation": 2})  # an older one never wins
    assert registry.current() == committed
    assert registry.stage(3, change(rm=4)) == 4
