"""A reward head over CLIP image embeddings (the LAION aesthetic predictor's shape): linear
layers read from a safetensors file (keys ``N.weight`` / ``N.bias`` of an ``nn.Sequential``,
applied in the order of N), with an optional activation between them. No pickle is read."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["LinearHead", "load_head"]

_KEY = re.compile(r"^(?:.*\.)?(\d+)\.(weight|bias)$")


class LinearHead:
    def __init__(
        self, layers: list[tuple[torch.Tensor, torch.Tensor | None]],
        activation: Literal["none", "relu", "gelu"],
    ) -> None:  # fmt: skip
        self.layers = layers
        self.activation = activation

    @property
    def in_features(self) -> int:
        return int(self.layers[0][0].shape[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        for n, (weight, bias) in enumerate(self.layers):
            x = torch.nn.functional.linear(x, weight, bias)
            if n < len(self.layers) - 1 and self.activation != "none":
                x = getattr(torch.nn.functional, self.activation)(x)
        return x


def load_head(path: Path, activation: Literal["none", "relu", "gelu"], device: torch.device,
              dtype: torch.dtype) -> LinearHead:  # fmt: skip
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    by_index: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"head {path}: unexpected tensor {key!r} (want N.weight / N.bias)")
        by_index.setdefault(int(match[1]), {})[match[2]] = tensor
    layers = []
    for index in sorted(by_index):
        weight = by_index[index].get("weight")
        if weight is None or weight.ndim != 2:
            raise ValueError(f"head {path}: layer {index} has no 2-d weight")
        bias = by_index[index].get("bias")
        layers.append((weight.to(device, dtype), None if bias is None else bias.to(device, dtype)))
    if not layers:
        raise ValueError(f"head {path}: no layers")
    for (a, _), (b, _) in itertools.pairwise(layers):
        if a.shape[0] != b.shape[1]:
            raise ValueError(
                f"head {path}: layer shapes {tuple(a.shape)} and {tuple(b.shape)} do not chain"
            )
    if layers[-1][0].shape[0] != 1:
        raise ValueError(
            f"head {path}: the last layer gives {layers[-1][0].shape[0]} values, not 1"
        )
    return LinearHead(layers, activation)
