"""Loading transformers models for the model scorers: where the weights are (a hub id, a
local directory, a GGUF file, or a directory inside an installed package), which device
and dtype to run them in, and what identifies them in a fingerprint.

torch and transformers are imported inside the functions: a config with rule scorers only
never loads them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from referee.scorers.base import ScorerOptions
from referee.scorers.models._vision import (
    is_vision_config,
    load_processor,
    sequence_classifier_class,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "LoadedModel",
    "ModelOptions",
    "ModelSource",
    "load_model",
    "load_tokenizer",
    "load_tokenizer_only",
    "load_vision_processor",
    "resolve_device_dtype",
]

log = logging.getLogger(__name__)

# Files of a local model that do not change its outputs.
_IGNORED_FILES = {"README.md", ".gitattributes", "LICENSE", "LICENSE.txt"}
# Files up to this size are hashed whole; larger weight files by size plus their first and
# last 16 MiB (a safetensors header, which lists every tensor, is at the start).
_FULL_HASH_BYTES = 512 << 20
_SAMPLE_BYTES = 16 << 20


class ModelOptions(ScorerOptions):
    """Options every transformers-backed scorer shares."""

    model: str = Field(
        min_length=1,
        description="A hub id (org/name), a local directory, a .gguf file, or "
        "package:NAME/path for weights shipped inside an installed Python package.",
    )
    revision: str | None = Field(
        default=None, description="Hub revision (a commit hash pins the cache's truth)."
    )
    tokenizer: str | None = Field(default=None, description="Tokenizer source, if not `model`.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bfloat16 on a GPU, float32 on CPU."
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps.")
    max_length: int | None = Field(
        default=None, gt=1, description="Tokens per input; unset: the model's own limit."
    )
    truncation: Literal["reject", "left", "right"] = Field(
        default="reject",
        description="An input over max_length: reject (a per-item error), or cut tokens "
        "from the left (keeps the end of the response) or the right; the result says "
        "`truncated: true`.",
    )
    padding_side: Literal["auto", "left", "right"] = Field(
        default="auto", description="auto: the tokenizer's own choice."
    )
    chat_template: str | None = Field(
        default=None, description="A Jinja chat template to use instead of the tokenizer's."
    )
    system_prompt: str | None = Field(
        default=None, description="Put first in conversations that do not start with one."
    )
    trust_remote_code: bool = False
    """Run the model repository's own Python code (remote-code models); only for models you trust,
    with `revision` pinned."""
    attn_implementation: str | None = Field(
        default=None, description="eager, sdpa or flash_attention_2; unset: transformers' choice."
    )
    fast_image_processor: bool = Field(
        default=False,
        description="Vision-language models: the processor's fast (torchvision) image "
        "preprocessing instead of the PIL one; its pixels differ slightly, so rewards do too.",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        base = value.split(":", 1)[0]
        if base not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


@dataclass(frozen=True)
class ModelSource:
    """What ``from_pretrained`` gets: a hub id or a directory, and a GGUF file name in it."""

    ref: str
    gguf_file: str | None
    local: Path | None  # the file or directory on disk, when not a hub id

    @classmethod
    def parse(cls, model: str) -> ModelSource:
        if model.startswith("package:"):
            package, _, rest = model[len("package:") :].partition("/")
            spec = importlib.util.find_spec(package)  # finds it without running its code
            if spec is None or not spec.submodule_search_locations:
                raise ValueError(f"model {model!r}: Python package {package!r} is not installed")
            path = Path(next(iter(spec.submodule_search_locations))) / rest
            if not path.exists():
                raise ValueError(f"model {model!r}: {path} does not exist")
            return cls._local(path)
        path = Path(os.path.expanduser(model))
        if path.exists():
            return cls._local(path)
        if model.endswith(".gguf") or model.startswith(("/", "./", "../", "~")):
            raise ValueError(f"model {model!r}: no such file or directory")
        return cls(ref=model, gguf_file=None, local=None)

    @classmethod
    def _local(cls, path: Path) -> ModelSource:
        path = path.resolve()
        if path.is_file():
            if path.suffix != ".gguf":
                raise ValueError(f"model {str(path)!r}: a file must be a .gguf")
            return cls(ref=str(path.parent), gguf_file=path.name, local=path)
        return cls(ref=str(path), gguf_file=None, local=path)

    def identity(self, revision: str | None) -> dict[str, object]:
        """Fingerprint material: a hash of the local files, or the hub id and revision."""
        if self.local is None:
            return {"model": self.ref, "revision": revision}
        return {"model_files": _hash_path(self.local)}


def _hash_path(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for file in files:
        if file.name in _IGNORED_FILES or ".cache" in file.parts:
            continue
        stat = file.stat()
        rel = file.name if file == path else str(file.relative_to(path))
        h.update(f"{rel}:{stat.st_size}:".encode())
        h.update(_hash_file(str(file), stat.st_size, stat.st_mtime_ns).encode())
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=256)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file (of its ends, when huge); cached while size and mtime hold."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_SAMPLE_BYTES))
            f.seek(size - _SAMPLE_BYTES)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """The device and dtype an "auto" choice means on this machine."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype == "auto":
        on_gpu = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if on_gpu else "float32"
    return device, dtype


@dataclass
class LoadedModel:
    tokenizer: Any  # transformers' PreTrainedTokenizerBase; typed loosely (lazy import)
    model: Any
    device: torch.device
    dtype: torch.dtype
    padding_side: Literal["left", "right"]
    pad_id: int
    max_length: int
    processor: Any = None  # a vision-language model's processor (images + tokenizer)


def load_tokenizer(options: ModelOptions) -> Any:
    """The tokenizer of ``tokenizer`` if set, else of ``model`` (from a GGUF file too)."""
    import transformers

    source = ModelSource.parse(options.model if options.tokenizer is None else options.tokenizer)
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if options.revision is not None:
        kwargs["revision"] = options.revision
    if source.gguf_file is not None:
        kwargs["gguf_file"] = source.gguf_file
    return transformers.AutoTokenizer.from_pretrained(source.ref, **kwargs)


def load_vision_processor(options: ModelOptions) -> Any:
    """A vision-language model's processor, without its weights; None for a text model."""
    import transformers

    source = ModelSource.parse(options.model)
    if source.gguf_file is not None:
        return None
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if options.revision is not None:
        kwargs["revision"] = options.revision
    if not is_vision_config(transformers.AutoConfig.from_pretrained(source.ref, **kwargs)):
        return None
    return load_processor(
        source.ref if options.tokenizer is None else options.tokenizer,
        use_fast=options.fast_image_processor,
        trust_remote_code=options.trust_remote_code,
        revision=options.revision,
    )


def load_model(options: ModelOptions, auto_class: str) -> LoadedModel:
    """Load tokenizer and model once; the model in eval mode on its device."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # bars are noise in a server's log
    source = ModelSource.parse(options.model)
    device_name, dtype_name = resolve_device_dtype(options.device, options.dtype)
    common: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if options.revision is not None:
        common["revision"] = options.revision
    if source.gguf_file is not None:
        common["gguf_file"] = source.gguf_file
    kwargs: dict[str, Any] = {**common, "dtype": getattr(torch, dtype_name)}
    if options.attn_implementation is not None:
        kwargs["attn_implementation"] = options.attn_implementation
    processor = None
    model_class = getattr(transformers, auto_class)
    if source.gguf_file is None and auto_class != "AutoModel":
        config = transformers.AutoConfig.from_pretrained(source.ref, **common)
        if is_vision_config(config):
            processor = load_processor(
                source.ref if options.tokenizer is None else options.tokenizer,
                use_fast=options.fast_image_processor,
                trust_remote_code=options.trust_remote_code,
                revision=options.revision,
            )
            if auto_class == "AutoModelForSequenceClassification":
                model_class = sequence_classifier_class(config)
            elif auto_class == "AutoModelForCausalLM":
                model_class = transformers.AutoModelForImageTextToText
    tokenizer = processor.tokenizer if processor is not None else load_tokenizer(options)
    model = model_class.from_pretrained(source.ref, **kwargs)
    model.to(device_name)
    model.eval()
    if tokenizer.pad_token_id is None:  # decoder-only tokenizers often have none
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = pad_id  # sequence classifiers find the last token by it
    side = options.padding_side
    if side == "auto":
        side = "left" if getattr(tokenizer, "padding_side", "right") == "left" else "right"
    if side == "left" and _is_encoder(model):
        # BERT-style models read their first position ([CLS]): it must be a real token.
        log.warning("%s is a bidirectional encoder: padding on the right", options.model)
        side = "right"
    return LoadedModel(
        tokenizer=tokenizer,
        model=model,
        device=torch.device(device_name),
        dtype=getattr(torch, dtype_name),
        padding_side=side,
        pad_id=pad_id,
        max_length=options.max_length or _model_limit(tokenizer, model),
        processor=processor,
    )


def _is_encoder(model: Any) -> bool:
    """A bidirectional encoder family (BERT, RoBERTa, DeBERTa...): one with a masked-LM head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return getattr(model.config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _model_limit(tokenizer: Any, model: Any) -> int:
    """The longest input the model takes: its position table, else the tokenizer's limit."""
    limits = [
        getattr(model.config.get_text_config(), "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10_000_000]
    return min(usable) if usable else 2048


def load_tokenizer_only(options: ModelOptions, served_limit: int | None) -> LoadedModel:
    """For a backend that runs the model elsewhere (vLLM, a pooling server): the tokenizer,
    and the input limit the transformers backend would use (the model's config, when it
    can be read here), within what the engine or server takes (``served_limit``)."""
    import torch
    import transformers

    tokenizer = load_tokenizer(options)
    own = options.max_length
    if own is None:
        config = None
        source = ModelSource.parse(options.model)
        if source.gguf_file is None:
            try:
                config = transformers.AutoConfig.from_pretrained(
                    source.ref, revision=options.revision,
                    trust_remote_code=options.trust_remote_code,
                )  # fmt: skip
            except (OSError, ValueError):  # a model the server has and this machine has not
                config = None
        own = _model_limit(tokenizer, _WithConfig(config))
    limit = min(own, served_limit) if served_limit else own
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return LoadedModel(
        tokenizer=tokenizer, model=None, device=torch.device("cpu"), dtype=torch.float32,
        padding_side="right", pad_id=int(pad), max_length=limit,
    )  # fmt: skip


@dataclass
class _WithConfig:
    config: Any
