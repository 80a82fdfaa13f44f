"""Config loading: YAML, environment overrides, field paths in errors, pipeline versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from referee.config import ConfigError, default_config_path, load_settings
from referee.engine import RewardEngine

BASE = {
    "scorers": {
        "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
        "len": {"kind": "length", "options": {"mode": "overlong", "max_length": 100,
                                              "buffer_length": 10}},
    },
    "pipelines": {"p": {"reward": {"type": "weighted_sum", "weights": [1.0, 0.5],
                                   "inputs": ["fmt", "len"]}}},
}  # fmt: skip


def problems(data: dict, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(data=data, environ=environ or {})
    return info.value.problems


def test_embedded_default_config_is_valid_and_offline() -> None:
    settings = load_settings(environ={})
    assert default_config_path().is_file()
    assert {"default", "math", "grpo"} <= set(settings.pipelines)
    assert {cfg.kind for cfg in settings.scorers.values()} <= {
        "math", "format", "match", "length", "repetition", "similarity"
    }  # fmt: skip
    # its one model scorer loads weights from an installed package, never from a hub
    models = [cfg.options["model"] for cfg in settings.scorers.values() if cfg.kind == "similarity"]
    assert models and all(m.startswith("package:") for m in models)


def test_environment_overrides_nested_fields() -> None:
    env = {
        "REFEREE_SERVER__PORT": "9100",
        "REFEREE_SERVER__API_KEYS": "k1, k2",
        "REFEREE_BATCHING__MAX_WAIT_MS": "0.5",
        "REFEREE_SCORERS__LEN__OPTIONS__MAX_LENGTH": "200",
        "REFEREE_CONFIG": "/ignored/not-a-section",
        "OTHER_SERVER__PORT": "1",
    }
    settings = load_settings(data=BASE, environ=env)
    assert settings.server.port == 9100
    assert settings.server.all_api_keys() == ["k1", "k2"]
    assert settings.batching.max_wait_ms == 0.5
    assert settings.scorers["len"].options["max_length"] == 200


def test_api_keys_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("alpha\n\n beta \n")
    data = {**BASE, "server": {"api_keys": ["gamma"], "api_keys_file": str(keys)}}
    assert load_settings(data=data, environ={}).server.all_api_keys() == ["gamma", "alpha", "beta"]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"server": {"port": 70000}}, "server.port: Input should be less than or equal to 65535"),
        ({"server": {"colour": "red"}}, "server.colour: Extra inputs are not permitted"),
        ({"scorers": {"x.y": {"kind": "format"}}}, "scorers: scorer name 'x.y'"),
        ({"scorers": {"fmt": {"kind": "nope"}}}, "scorers.fmt: unknown scorer kind 'nope'; known kinds: classifier, clip, code, format, judge, length, likelihood, match, math, prm, python, repetition, similarity, sql"),
        ({"scorers": {"fmt": {"kind": "format", "options": {"mode": "regex", "pattern": "("}}}},
         "scorers.fmt: options.pattern"),
        ({"pipelines": {"p": {"reward": "ghost"}}}, "unknown scorer 'ghost'"),
        ({"pipelines": {}}, "at least one pipeline"),
        ({"pipelines": {"p": {"reward": {"type": "weighted_sum", "weights": [1, "inf"], "inputs": ["fmt", "len"]}}}},
         "pipelines.p.reward.weights[1]: Input should be a finite number"),
        ({"pipelines": {"p": {"reward": {"type": "mean", "inputs": ["fmt", {"type": "gate", "when": {"node": "fmt", "value": 1}}]}}}},
         "pipelines.p.reward.inputs[1].then: Field required"),
        ({"pipelines": {"p": {"reward": {"type": "mean", "inputs": [{"type": "scorer", "scorer": "fmt", "transforms": [{"type": "clip", "min": 1, "max": 0}]}]}}}},
         "pipelines.p.reward.inputs[0].transforms[0]: clip min (1.0) must not exceed max (0.0)"),
        ({"pipelines": {"p": {"reward": {"type": "blend", "inputs": ["fmt"]}}}},
         "pipelines.p.reward: a node is a scorer name or a mapping whose `type` is one of"),
    ],
)  # fmt: skip
def test_invalid_values_name_their_field(patch: dict, expected: str) -> None:
    data = {**BASE, **patch}
    found = problems(data)
    assert any(expected in p for p in found), found


def test_faults_found_only_by_resolving_options_still_name_their_field(tmp_path: Path) -> None:
    missing_keys = {**BASE, "server": {"api_keys_file": str(tmp_path / "nope")}}
    assert any(p.startswith("server.api_keys_file: cannot read") for p in problems(missing_keys))
    no_function = {**BASE, "scorers": {**BASE["scorers"], "fn": {"kind": "python", "options": {
        "function": "referee.examples.rewards:does_not_exist"}}}}  # fmt: skip
    assert any(p.startswith("scorers.fn: options") and "does_not_exist" in p
               for p in problems(no_function))  # fmt: skip


def test_numeric_looking_api_keys_from_the_environment_stay_text() -> None:
    for raw in ("12345", "yes", "0123"):
        settings = load_settings(data=BASE, environ={"REFEREE_SERVER__API_KEYS": raw})
        assert settings.server.all_api_keys() == [raw]


def test_bad_yaml_and_non_mapping_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("scorers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, environ={})
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(listy, environ={})


def test_pipeline_version_is_stable_and_tracks_what_changes_rewards() -> None:
    def version(data: dict) -> str:
        return RewardEngine(load_settings(data=data, environ={})).pipelines["p"].version

    v1 = version(BASE)
    assert v1 == version(BASE)  # stable across processes/instances
    assert v1.startswith("sha256:")
    reweighted = {**BASE, "pipelines": {"p": {"reward": {"type": "weighted_sum", "weights": [1.0, 0.25], "inputs": ["fmt", "len"]}}}}  # fmt: skip
    assert version(reweighted) != v1
    option_changed = {**BASE, "scorers": {**BASE["scorers"], "len": {"kind": "length", "options": {"mode": "overlong", "max_length": 101, "buffer_length": 10}}}}  # fmt: skip
    assert version(option_changed) != v1
    served_elsewhere = {**BASE, "server": {"port": 1234}, "batching": {"max_batch_size": 7}}
    assert version(served_elsewhere) == v1  # serving settings do not change rewards


def test_scorer_fingerprint_ignores_pipeline_weights_but_not_options() -> None:
    base = RewardEngine(load_settings(data=BASE, environ={}))
    reweighted = {**BASE, "pipelines": {"p": {"reward": {"type": "weighted_sum", "weights": [3.0, 0.5], "inputs": ["fmt", "len"]}}}}  # fmt: skip
    other = RewardEngine(load_settings(data=reweighted, environ={}))
    assert base.scorers["len"].fingerprint() == other.scorers["len"].fingerprint()
    changed = {**BASE, "scorers": {**BASE["scorers"], "fmt": {"kind": "format", "options": {"mode": "think_answer", "answer_tag": "final"}}}}  # fmt: skip
    assert RewardEngine(load_settings(data=changed, environ={})).scorers["fmt"].fingerprint() != (
        base.scorers["fmt"].fingerprint()
    )
