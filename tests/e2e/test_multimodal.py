"""`referee serve` scoring image items that the SDK sends over HTTP and gRPC, and the
README's text-to-image pipeline (alignment + an aesthetic head + a gate) run end to end:
its config served (model paths and the gate's threshold put to the tiny CLIP's scale) and
its Python sample run as written against it."""

from __future__ import annotations

import ast
import asyncio
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from referee_client import RewardClient
from tests.doc_blocks import blocks
from tests.e2e.server import free_port, running_server
from tests.media import encoded, gradient, truncated_jpeg

pytestmark = pytest.mark.slow
pytest.importorskip("transformers", reason="the clip scorer needs the models extra")

README_MODEL = "openai/clip-vit-large-patch14"
README_HEAD = "/models/aesthetic-head.safetensors"
README_URL = "http://127.0.0.1:8000"
PROMPT = "a photo of a cat"


def readme_block(name: str) -> str:
    (block,) = [b for b in blocks(Path("README.md"))
                if b.reason == f"tests/e2e/test_multimodal.py: {name}"]  # fmt: skip
    return block.text


@dataclass
class Server:
    http: str
    grpc: str
    media: Path
    threshold: float
    images: dict[str, bytes]


def readme_images() -> dict[str, bytes]:
    return {"cat.png": encoded(gradient(64, 48, seed=5)),
            "dog.jpg": encoded(gradient(64, 48, seed=1), "JPEG", quality=95)}  # fmt: skip


def alignments(model: Path, files: dict[str, bytes]) -> list[float]:
    """CLIPScores of the README's images in-process, to put the gate between them."""
    from PIL import Image

    from referee.scorers import ScoreInput
    from referee.scorers.multimodal.clip import ClipOptions, ClipScorer
    from referee_client.schema import RewardItem

    scorer = ClipScorer("alignment", ClipOptions(model=str(model)))
    asyncio.run(scorer.setup())
    pictures = [Image.open(io.BytesIO(files["cat.png"])),
                np.asarray(Image.open(io.BytesIO(files["dog.jpg"])))]  # fmt: skip
    items = [ScoreInput.from_item(RewardItem(id=str(i), prompt=PROMPT, response_images=[p]))
             for i, p in enumerate(pictures)]  # fmt: skip
    values = [r.value for r in asyncio.run(scorer.score_batch(items))]
    assert all(v is not None for v in values)
    return [float(v) for v in values if v is not None]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path, tiny_clip_head: Path
) -> Iterator[Server]:
    files = readme_images()
    cat, dog = alignments(tiny_clip, files)
    assert abs(cat - dog) > 1e-3, "the two images must fall on either side of the gate"
    threshold = (cat + dog) / 2
    text = readme_block("t2i-config").replace(README_MODEL, str(tiny_clip))
    text = text.replace(README_HEAD, str(tiny_clip_head)).replace(
        "value: 0.5", f"value: {threshold}"
    )
    config = yaml.safe_load(text)
    media = tmp_path_factory.mktemp("media")
    config["media"] = {"roots": [str(media)]}
    config["scorers"]["caption"] = {"kind": "clip", "options": {
        "model": str(tiny_clip), "compare": "captioning", "score": "cosine"}}  # fmt: skip
    config["pipelines"]["caption"] = {"reward": "caption"}
    path = tmp_path_factory.mktemp("config") / "multimodal.yaml"
    path.write_text(yaml.safe_dump(config))
    grpc_port = free_port()
    with running_server("--config", str(path), "--grpc-port", str(grpc_port)) as (url, _):
        yield Server(url, f"grpc://127.0.0.1:{grpc_port}", media, threshold, files)


def test_the_readme_text_to_image_pipeline_runs_end_to_end(server: Server, tmp_path: Path) -> None:
    for name, data in server.images.items():
        (tmp_path / name).write_bytes(data)
    code = readme_block("t2i-client").replace(README_URL, server.http)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["img-0", "img-1"]
    passed = 0
    for line in lines:
        found = re.fullmatch(r"(\S+) (\S+) (\{.*\})", line)
        assert found, line
        reward = float(found.group(2))
        components = ast.literal_eval(found.group(3))  # the dict print() wrote
        alignment = components["alignment"]
        if alignment >= server.threshold:  # the gate opens: alignment + 0.1 * aesthetic
            passed += 1
            assert reward == pytest.approx(alignment + 0.1 * components["aesthetic"], abs=1e-6)
            assert components["aesthetic"] != 0.0
        else:  # closed: 0, and the aesthetic head never ran for it
            assert reward == 0.0 and components.get("aesthetic") is None
    assert passed == 1, lines  # one image on each side of the gate


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_sdk_sends_pil_numpy_paths_and_server_paths_over_both_transports(
    server: Server, transport: str, tmp_path: Path
) -> None:
    from PIL import Image

    png = encoded(gradient(48, 40, seed=3))
    (server.media / "shared.png").write_bytes(png)
    (tmp_path / "local.png").write_bytes(png)
    picture = Image.open(tmp_path / "local.png")
    same = [picture, np.asarray(picture), tmp_path / "local.png", str(server.media / "shared.png"),
            {"url": f"file://{server.media}/shared.png"}]  # fmt: skip
    items: list[dict[str, Any]] = [
        {"id": f"s{i}", "prompt": PROMPT, "response_images": [image]}
        for i, image in enumerate(same)
    ]
    items.append({"id": "broken", "prompt": PROMPT, "response_images": [truncated_jpeg()]})
    captions = [
        {"id": "c0", "prompt_images": [picture], "response": "a cat on a sofa"},
        {"id": "c1", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(server.media / "shared.png")}},
                                         {"type": "text", "text": "What is in the picture?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a cat on a sofa"}]}]},
    ]  # fmt: skip
    url = server.http if transport == "http" else server.grpc
    with RewardClient(url) as client:
        t2i = client.score(items, pipeline="t2i", options={"return_components": True}).results
        caption = client.score(captions, pipeline="caption").results
    alignment = [r.components["alignment"] for r in t2i[:5] if r.components]
    assert len(alignment) == 5 and max(alignment) - min(alignment) < 1e-6  # one image, 5 ways
    assert t2i[5].outcome == "invalid" and t2i[5].error is not None
    assert t2i[5].error.type == "invalid_image"
    assert caption[0].outcome == caption[1].outcome == "scored"
    assert caption[0].reward == pytest.approx(caption[1].reward, abs=1e-6)
