"""Images on the wire and at the door: the SDK encodes what a trainer holds, JSON carries
data URLs and gRPC raw bytes, the server reads only allowed sources under its limits
(413/422 naming the field), decodes real PNG/JPEG/WebP with Pillow, turns a truncated file
or a decompression bomb into an image error, and keys the cache by the image's bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from referee.cache import cache_key
from referee.errors import ErrorKind, RefereeError, item_outcome
from referee.media import ImageDecodeError, MediaSettings, resolve_images
from referee.scorers import ScoreInput
from referee_client import _convert as convert
from referee_client._proto import referee_pb2 as pb
from referee_client.schema import RewardItem, RewardRequest
from tests.media import bomb_png, data_url, encoded, gradient, truncated_jpeg


def resolve(items: list[dict[str, object]], **settings: object) -> RewardRequest:
    request = RewardRequest.model_validate({"items": items})
    return asyncio.run(resolve_images(request, MediaSettings.model_validate(settings)))


def refused(items: list[dict[str, object]], **settings: object) -> RefereeError:
    with pytest.raises(RefereeError) as caught:
        resolve(items, **settings)
    return caught.value


def score_input(request: RewardRequest, i: int = 0, **kw: int) -> ScoreInput:
    return ScoreInput.from_item(request.items[i], **kw)


# -- the SDK side ------------------------------------------------------------------------------
def test_sdk_encodes_pil_images_numpy_arrays_and_paths_as_png_or_as_they_are(
    tmp_path: Path,
) -> None:
    image = gradient(8, 6)
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(encoded(image, "JPEG"))
    array = np.asarray(image)
    item = RewardItem(
        id="a", prompt="p",
        response_images=[image, array, array.astype(np.float32) / 255.0, jpeg],
    )  # fmt: skip
    data = [i.data for i in item.response_images or ()]
    assert all(d is not None for d in data)
    assert data[0] == data[1] == data[2] and data[0][:4] == b"\x89PNG"  # type: ignore[index]
    assert data[3] == jpeg.read_bytes()  # a file is sent as it is
    with pytest.raises(ValueError, match="HxW"):
        RewardItem(id="b", response_images=[np.zeros((2, 2, 5), np.uint8)])


def test_json_carries_a_data_url_and_grpc_raw_bytes() -> None:
    png = encoded(gradient())
    item = RewardItem(id="a", prompt="p", response_images=[png])
    wire = item.model_dump(mode="json", exclude_none=True)
    assert wire["response_images"] == [{"url": data_url(png)}]
    # a client that sent a data URL over HTTP: the SDK's gRPC transport sends the bytes
    request = RewardRequest(items=[RewardItem.model_validate(wire)])
    message = convert.request_to_proto(request)
    assert message.items[0].response_images[0].data == png
    assert not message.items[0].response_images[0].HasField("url")
    back = RewardRequest.model_validate(
        convert.request_from_proto(pb.RewardRequest.FromString(message.SerializeToString()))
    )
    assert back.items[0].response_images[0].data == png  # type: ignore[index]


def test_items_take_images_in_message_parts_or_as_fields_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        RewardItem.model_validate(
            {
                "id": "a",
                "prompt_images": ["/x.png"],
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
            }
        )
    with pytest.raises(ValueError, match="response_images"):
        RewardItem.model_validate({"id": "a", "prompt": "q"})
    item = RewardItem.model_validate({"id": "a", "prompt": "a cat", "response_images": ["/x.png"]})
    assert item.response_text() == "" and item.prompt_text() == "a cat"


# -- sources -----------------------------------------------------------------------------------
def test_data_urls_paths_under_roots_and_bytes_give_the_same_image_and_cache_key(
    tmp_path: Path,
) -> None:
    png = encoded(gradient())
    (tmp_path / "a.png").write_bytes(png)
    request = resolve(
        [{"id": "url", "prompt": "p", "response_images": [data_url(png)]},
         {"id": "path", "prompt": "p", "response_images": [str(tmp_path / "a.png")]},
         {"id": "file", "prompt": "p", "response_images": [f"file://{tmp_path}/a.png"]},
         {"id": "bytes", "prompt": "p", "response_images": [{"data": png}]}],
        roots=[str(tmp_path)],
    )  # fmt: skip
    inputs = [score_input(request, i) for i in range(4)]
    assert {x.response_images[0].data for x in inputs} == {png}
    keys = {cache_key("fp", x, ("prompt", "response_images")) for x in inputs}
    assert len(keys) == 1
    other = resolve([{"id": "o", "prompt": "p", "response_images": [encoded(gradient(seed=1))]}])
    assert cache_key("fp", score_input(other), ("prompt", "response_images")) not in keys


def test_a_path_outside_the_media_roots_is_refused_naming_the_field(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(encoded(gradient()))
    (root / "link.png").symlink_to(outside)
    for url in (str(outside), f"{root}/../secret.png", str(root / "link.png")):
        error = refused([{"id": "a", "prompt": "p", "response_images": [url]}], roots=[str(root)])
        assert error.kind is ErrorKind.INVALID_REQUEST
        assert error.param == "items[0].response_images[0]"
        assert "media.roots" in error.message
    error = refused([{"id": "a", "prompt": "p", "response_images": [str(outside)]}])
    assert "media.roots is empty" in error.message


def test_http_urls_are_refused_unless_their_host_is_allow_listed() -> None:
    # the refusal needs no network: nothing is fetched for a host that is not allowed
    for settings in ({}, {"url_hosts": ["images.example.com"]}):
        error = refused(
            [{"id": "a", "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]},
                {"role": "assistant", "content": "a cat"}]}],
            **settings,
        )  # fmt: skip
        assert error.kind is ErrorKind.INVALID_REQUEST
        assert error.param == "items[0].messages[0].content[1].image_url"
        assert "media.url_hosts" in error.message


def test_an_image_over_the_byte_limit_is_413_naming_its_field(tmp_path: Path) -> None:
    big = encoded(gradient(256, 256), "PNG", compress_level=0)
    (tmp_path / "big.png").write_bytes(big)
    for source in (data_url(big), {"data": big}, str(tmp_path / "big.png")):
        error = refused(
            [{"id": "a", "prompt": "p", "response_images": [encoded(gradient())]},
             {"id": "b", "prompt": "p", "reference_images": [source], "response": "r"}],
            max_image_bytes=len(big) - 1, roots=[str(tmp_path)],
        )  # fmt: skip
        assert error.kind is ErrorKind.PAYLOAD_TOO_LARGE
        assert error.param == "items[1].reference_images[0]"
        assert "media.max_image_bytes" in error.message


def test_too_many_images_and_formats_not_allowed_are_refused() -> None:
    png = encoded(gradient())
    error = refused([{"id": "a", "prompt": "p", "response_images": [png] * 3}],
                    max_images_per_item=2)  # fmt: skip
    assert (error.kind, error.param) == (ErrorKind.PAYLOAD_TOO_LARGE, "items[0]")
    gif = encoded(gradient(), "GIF")
    error = refused([{"id": "a", "prompt": "p", "response_images": [gif]}])
    assert (error.kind, error.param) == (ErrorKind.INVALID_REQUEST, "items[0].response_images[0]")
    assert "GIF" in error.message
    error = refused([{"id": "a", "prompt": "p", "response_images": [b"not an image"]}])
    assert "known format" in error.message
    error = refused([{"id": "a", "prompt": "p", "response_images": ["data:image/png;base64,%%%"]}])
    assert "base64" in error.message
    assert resolve([{"id": "a", "prompt": "p", "response_images": [gif]}], formats=["GIF"])


# -- decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_real_files_decode_with_pillow(fmt: str) -> None:
    image = gradient(40, 30)
    request = resolve([{"id": "a", "prompt": "p", "response_images": [encoded(image, fmt)]}])
    decoded = score_input(request).response_images[0].decode()
    assert decoded.size == (40, 30) and decoded.mode == "RGB"
    if fmt == "PNG":  # lossless
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_a_truncated_jpeg_and_a_decompression_bomb_are_image_errors() -> None:
    bomb = bomb_png()  # 10000 x 10000 pixels in ~100 kB
    request = resolve([
        {"id": "t", "prompt": "p", "response_images": [truncated_jpeg()]},
        {"id": "b", "prompt": "p", "response_images": [bomb]},
    ])  # fmt: skip
    with pytest.raises(ImageDecodeError, match="does not decode"):
        score_input(request, 0).response_images[0].decode()
    with pytest.raises(ImageDecodeError, match="100000000 pixels"):
        score_input(request, 1, max_image_pixels=4096 * 4096).response_images[0].decode()
    assert item_outcome("invalid_image") == ("invalid", False)


def test_message_parts_become_prompt_and_response_images_in_order() -> None:
    a, b, c = (encoded(gradient(seed=s)) for s in range(3))
    request = resolve([{"id": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(a)}},
                                     {"type": "text", "text": "and"},
                                     {"type": "image_url", "image_url": {"data": b}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "two"},
                                          {"type": "image_url", "image_url": {"data": c}}]}]}])  # fmt: skip
    x = score_input(request)
    assert [i.data for i in x.prompt_images] == [a, b] and [i.data for i in x.response_images] == [
        c
    ]
    assert x.prompt == "and" and x.response == "two"
    assert [i.data for i in x.message_images()] == [a, b, c]
    assert x.messages is not None
    parts = x.messages[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text", "image"]
    assert parts[0]["sha256"] == x.prompt_images[0].sha256


def test_length_bias_reads_response_text_and_leaves_image_only_responses_out() -> None:
    from referee.monitors import PipelineMonitor

    monitor = PipelineMonitor("p", {}, window=100)
    for n in (10, 20, 30, 40):
        monitor.record(n, {"r": n / 10})  # reward grows with the text's length
    for r in (5.0, -5.0, 3.0):
        monitor.record(None, {"r": r})  # image-only responses: no text length
    stats = monitor.stats()["components"]["r"]  # type: ignore[index]
    assert stats["count"] == 7
    assert stats["length_correlation"] == pytest.approx(1.0)


def test_pillow_numpy_and_torch_load_only_when_an_image_is_decoded_or_encoded() -> None:
    import subprocess
    import sys

    code = (
        "import asyncio, sys, base64\n"
        "import referee.engine, referee.scorers.multimodal.clip\n"
        "from referee.media import MediaSettings, resolve_images\n"
        "from referee.scorers import ScoreInput\n"
        "from referee_client.schema import RewardRequest\n"
        "png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4AWNgAAAAAgABc3UBGAAAAABJRU5ErkJggg==')\n"
        "r = RewardRequest.model_validate({'items': [{'id': 'a', 'response_images': [{'data': png}]}]})\n"
        "r = asyncio.run(resolve_images(r, MediaSettings()))\n"
        "x = ScoreInput.from_item(r.items[0])\n"
        "before = {m for m in ('PIL', 'numpy', 'torch', 'transformers') if m in sys.modules}\n"
        "x.response_images[0].decode()\n"
        "print(sorted(before), 'PIL' in sys.modules)\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]
