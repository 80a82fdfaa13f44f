"""The clip scorer on a real (tiny, seeded) CLIPModel: served rewards equal a plain
transformers script run one item at a time, batches do not change values, real PNG/JPEG
files decode, broken images are per-item errors, and image sources and limits are enforced
at the door with the field named."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from referee.scorers import scorer_class
from referee.scorers.multimodal.clip import ClipScorer
from referee_client.schema import RewardItem
from tests.integration.conftest import serve_app
from tests.media import bomb_png, encoded, gradient, truncated_jpeg

torch = pytest.importorskip("torch", reason="the clip scorer needs the models extra")
transformers = pytest.importorskip("transformers")

PROMPTS = ["a cat", "the dog in the house of the cat", "x", "a red square at night, oil on canvas"]


def images(n: int, offset: int = 0) -> list[bytes]:
    """PNGs and JPEGs of several sizes (the processor resizes and crops them)."""
    out = []
    for i in range(offset, offset + n):
        image = gradient(24 + 8 * (i % 4), 40 - 4 * (i % 3), seed=i)
        out.append(encoded(image, "JPEG", quality=85) if i % 2 else encoded(image))
    return out


def clip_config(model: Path, **scorers: dict[str, Any]) -> dict[str, Any]:
    return {
        "scorers": {name: {"kind": "clip", "options": {"model": str(model), **opts}}
                    for name, opts in scorers.items()},
        "pipelines": {name: {"reward": name} for name in scorers},
    }  # fmt: skip


def wire(**item: Any) -> dict[str, Any]:
    """An item as the SDK sends it over HTTP (images as data URLs)."""
    return RewardItem(**item).model_dump(mode="json", exclude_none=True)


async def post(client: Any, pipeline: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post("/v1/rewards", json={"pipeline": pipeline, "items": items})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    return results


# -- the plain transformers script, one item at a time ----------------------------------
class Plain:
    def __init__(self, model_dir: Path, head: Path | None = None) -> None:
        from PIL import Image

        self.image = lambda data: Image.open(io.BytesIO(data)).convert("RGB")
        self.processor = transformers.CLIPProcessor.from_pretrained(str(model_dir))
        self.model = transformers.CLIPModel.from_pretrained(str(model_dir)).eval()
        self.head = None
        if head is not None:
            from safetensors.torch import load_file

            t = load_file(str(head))
            self.head = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 1))
            self.head.load_state_dict({"0.weight": t["0.weight"], "0.bias": t["0.bias"],
                                       "1.weight": t["2.weight"], "1.bias": t["2.bias"]})  # fmt: skip

    @torch.no_grad()
    def image_text(self, text: str, image: bytes) -> tuple[float, float]:
        """(cosine, logits_per_image) of one pair."""
        inputs = self.processor(text=[text], images=[self.image(image)], return_tensors="pt")
        out = self.model(**inputs)
        return float(out.image_embeds[0] @ out.text_embeds[0]), float(out.logits_per_image[0, 0])

    @torch.no_grad()
    def aesthetic(self, image: bytes) -> float:
        assert self.head is not None
        return float(self.head(self.embed(image)))

    @torch.no_grad()
    def embed(self, image: bytes) -> Any:
        inputs = self.processor(images=[self.image(image)], return_tensors="pt")
        features = self.model.get_image_features(**inputs)
        if not isinstance(features, torch.Tensor):
            features = features.pooler_output
        return torch.nn.functional.normalize(features[0], dim=-1)


@pytest.fixture(scope="module")
def plain(tiny_clip: Path, tiny_clip_head: Path) -> Plain:
    return Plain(tiny_clip, tiny_clip_head)


async def test_served_rewards_equal_a_plain_transformers_script_item_by_item(
    tiny_clip: Path, tiny_clip_head: Path, plain: Plain
) -> None:
    pics, refs = images(4), images(4, offset=10)
    config = clip_config(
        tiny_clip,
        t2i={"compare": "text_to_image"},
        pick={"compare": "text_to_image", "score": "logits"},
        caption={"compare": "captioning", "score": "cosine"},
        ref={"compare": "image_to_reference", "score": "cosine"},
        aesthetic={"compare": "image_head", "head": str(tiny_clip_head)},
    )
    async with serve_app(config) as (client, _):
        t2i = [wire(id=f"t{i}", prompt=p, response_images=[pics[i]]) for i, p in enumerate(PROMPTS)]
        caption = [wire(id=f"c{i}", prompt_images=[pics[i]], response=p)
                   for i, p in enumerate(PROMPTS)]  # fmt: skip
        ref = [wire(id=f"r{i}", response_images=[pics[i]], reference_images=[refs[i]])
               for i in range(4)]  # fmt: skip
        served = {
            "t2i": await post(client, "t2i", t2i),
            "pick": await post(client, "pick", t2i),
            "caption": await post(client, "caption", caption),
            "ref": await post(client, "ref", ref),
            "aesthetic": await post(client, "aesthetic", ref),
        }
    cosines = [plain.image_text(p, pics[i]) for i, p in enumerate(PROMPTS)]
    expected = {
        "t2i": [2.5 * max(cos, 0.0) for cos, _ in cosines],
        "pick": [logit for _, logit in cosines],
        "caption": [cos for cos, _ in cosines],
        "ref": [float(plain.embed(pics[i]) @ plain.embed(refs[i])) for i in range(4)],
        "aesthetic": [plain.aesthetic(pics[i]) for i in range(4)],
    }
    for name, results in served.items():
        got = [r["reward"] for r in results]
        assert all(r["outcome"] == "scored" for r in results), results
        assert got == pytest.approx(expected[name], abs=1e-4), name
    # the values differ from item to item: a parity of constants would prove nothing
    assert len({round(v, 4) for v in expected["pick"]}) == 4
    assert any(v > 0 for v in expected["t2i"])
    assert served["t2i"][0]["components"] is not None


async def test_logits_use_the_models_own_logit_scale(tiny_clip: Path, plain: Plain) -> None:
    s = make(tiny_clip, score="logits")
    await s.setup()
    (pic,) = images(1)
    (result,) = await s.score_batch([item("a", PROMPTS[1], pic)])
    cos, _ = plain.image_text(PROMPTS[1], pic)
    assert result.value == pytest.approx(100.0 * cos, abs=1e-3)  # exp(4.6052) = 100
    assert result.aspects["cosine"] == pytest.approx(cos, abs=1e-5)


def make(model: Path, **options: Any) -> ClipScorer:
    cls = scorer_class("clip")
    made = cls("clip", cls.Options.model_validate({"model": str(model), **options}))
    assert isinstance(made, ClipScorer)
    return made


def item(id: str, prompt: str, *pics: bytes) -> Any:
    from referee.scorers import ScoreInput

    return ScoreInput.from_item(RewardItem(id=id, prompt=prompt, response_images=list(pics)))


async def test_values_are_the_same_alone_and_in_a_batch(tiny_clip: Path) -> None:
    s = make(tiny_clip, score="cosine")
    await s.setup()
    pics = images(8)
    batch = [item(f"i{k}", PROMPTS[k % 4] * (1 + k % 3), pics[k], *pics[: k % 3])
             for k in range(8)]  # fmt: skip
    batch.append(item("dup", PROMPTS[0], pics[0]))  # an image and a text twice in one batch
    together = await s.score_batch(batch)
    for x, batched in zip(batch, together, strict=True):
        (alone,) = await s.score_batch([x])
        assert batched.value is not None and alone.value is not None
        assert abs(batched.value - alone.value) <= 1e-4
    assert together[0].value == pytest.approx(together[-1].value, abs=1e-6)


async def test_broken_images_are_per_item_errors_and_the_rest_are_scored(tiny_clip: Path) -> None:
    (good,) = images(1)
    items = [
        wire(id="good", prompt="a cat", response_images=[good]),
        wire(id="truncated", prompt="a cat", response_images=[truncated_jpeg()]),
        wire(id="bomb", prompt="a cat", response_images=[bomb_png()]),
        wire(id="no-image", prompt="a cat", response="text only"),
        wire(id="good2", prompt="a dog", response_images=[good]),
        wire(id="truncated-again", prompt="a dog", response_images=[truncated_jpeg()]),
    ]
    async with serve_app(clip_config(tiny_clip, t2i={"score": "cosine"})) as (client, _):
        results = await post(client, "t2i", items)
    outcome = {r["id"]: (r["outcome"], (r["error"] or {}).get("type")) for r in results}
    assert outcome == {
        "good": ("scored", None), "good2": ("scored", None),
        "truncated": ("invalid", "invalid_image"), "bomb": ("invalid", "invalid_image"),
        "no-image": ("invalid", "missing_image"), "truncated-again": ("invalid", "invalid_image"),
    }  # fmt: skip
    assert "100000000 pixels" in results[2]["error"]["message"]
    assert "does not decode" in results[1]["error"]["message"]


async def test_one_image_as_a_data_url_or_a_path_is_one_cache_entry(
    tiny_clip: Path, tmp_path: Path
) -> None:
    (pic,) = images(1)
    (tmp_path / "a.png").write_bytes(pic)
    config = {**clip_config(tiny_clip, t2i={}), "media": {"roots": [str(tmp_path)]}}
    async with serve_app(config) as (client, _):
        (first,) = await post(client, "t2i", [wire(id="a", prompt="a cat", response_images=[pic])])
        (second,) = await post(
            client,
            "t2i",
            [{"id": "b", "prompt": "a cat", "response_images": [str(tmp_path / "a.png")]}],
        )
    assert not first["cached"] and second["cached"]
    assert second["reward"] == first["reward"]


@pytest.fixture
def image_host() -> Iterator[str]:
    """A local HTTP server (127.0.0.1) that serves one PNG at /cat.png."""
    (pic,) = images(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/cat.png"
            self.send_response(200 if found else 404)
            self.send_header("content-length", str(len(pic) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(pic)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_sources_and_limits_are_refused_at_the_door_naming_the_field(
    tiny_clip: Path, tmp_path: Path, image_host: str
) -> None:
    (pic,) = images(1)
    outside = tmp_path / "outside.png"
    outside.write_bytes(pic)
    root = tmp_path / "media"
    root.mkdir()
    url = f"http://{image_host}/cat.png"
    config = clip_config(tiny_clip, t2i={})
    config["media"] = {"roots": [str(root)], "max_image_bytes": 50_000}
    big = encoded(gradient(200, 200), "PNG", compress_level=0)  # 120 kB

    async def send(client: Any, image: object) -> Any:
        return await client.post("/v1/rewards", json={"pipeline": "t2i", "items": [
            wire(id="ok", prompt="a cat", response_images=[pic]),
            {"id": "x", "prompt": "a cat", "response_images": [image]}]})  # fmt: skip

    async with serve_app(config) as (client, _):
        for image, status, words in [
            (str(outside), 422, "not under the server's media.roots"),
            (f"{root}/../outside.png", 422, "not under the server's media.roots"),
            (url, 422, "media.url_hosts"),
            (RewardItem(id="b", response_images=[big]).model_dump(mode="json")
             ["response_images"][0], 413, "media.max_image_bytes"),
        ]:  # fmt: skip
            response = await send(client, image)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["param"] == "items[1].response_images[0]"
            assert words in error["message"]
    config["media"]["url_hosts"] = [image_host]
    async with serve_app(config) as (client, _):
        response = await send(client, {"url": url})
        assert response.status_code == 200, response.text
        ok, fetched = response.json()["results"]
        assert fetched["outcome"] == "scored" and fetched["reward"] == ok["reward"]
        missing = await send(client, {"url": url.replace("cat", "dog")})
        assert missing.status_code == 422 and "HTTP 404" in missing.json()["error"]["message"]


async def test_options_are_checked_at_start(tiny_clip: Path, tiny_clip_head: Path) -> None:
    cls = scorer_class("clip")
    with pytest.raises(ValueError, match="head"):
        cls.Options.model_validate({"model": str(tiny_clip), "compare": "image_head"})
    with pytest.raises(ValueError, match="logits"):
        cls.Options.model_validate({"model": str(tiny_clip), "compare": "image_to_reference",
                                    "score": "logits"})  # fmt: skip
    a = make(tiny_clip, compare="image_head", head=str(tiny_clip_head))
    assert a.cache_fields() == ("response_images",)
    assert make(tiny_clip).cache_fields() == ("prompt", "response_images")
