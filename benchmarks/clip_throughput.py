"""CLIP scorer throughput: images/s of `kind: clip` (text-to-image CLIPScore) over HTTP
against a plain batched transformers loop on the same model and machine, with the cost of
decoding and preprocessing the images reported on its own.

    .venv/bin/python benchmarks/clip_throughput.py [--images 1024] [--size 256] [--rounds 3]

Model: the tests' tiny CLIPModel (tests/models.py: 2 layers of width 32 a tower, 32x32
inputs, random weights from seed 0) with its CLIPProcessor (PIL image processor), fp32 on
CPU. Workload: ``--images`` (prompt, PNG image) items, every image ``--size`` pixels square
and distinct (a text-to-image policy's outputs), prompts of 3 to 12 words; cache off.

- plain: one process, no server: the PNG bytes decoded with PIL, the processor over a batch
  of ``--batch`` images and texts, one forward pass per batch under inference_mode — what a
  careful script does. Its decode+preprocess time and its model time are timed apart:
  ``decode_images_per_s`` is what decoding and preprocessing alone would allow.
- referee: `referee serve` with the clip scorer; ``--clients`` concurrent clients send
  ``--per-request`` items a request as the SDK does over HTTP (data URLs; the JSON bodies
  are built before the clock starts, as a trainer's client would have them ready).

The two run alternately, ``--rounds`` times; the ratio is the median of the per-round
ratios. ``--threads`` sets torch's threads in both (default 1: on a shared machine a
second spinning torch thread slows a small model's forward pass many times over). Writes benchmarks/results/clip_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tests.models import save_tiny_clip  # noqa: E402

from rule_throughput import percentile, start_server, stop  # noqa: E402

WORDS = "a photo of red cat dog house sofa at night oil painting blue sky over the sea".split()


def make_items(n: int, size: int, seed: int = 0) -> list[tuple[str, bytes]]:
    import numpy as np
    from PIL import Image

    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        # smooth colour fields plus noise: compresses like a photo, not like a flat fill
        base = gen.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        noisy = np.asarray(image).astype(np.int16) + gen.integers(-8, 9, (size, size, 3))
        out = io.BytesIO()
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out, format="PNG")
        items.append((prompt, out.getvalue()))
    return items


class Plain:
    """The careful script: decode, preprocess and run batches of ``batch`` items."""

    def __init__(self, model_dir: Path) -> None:
        import transformers

        self.processor = transformers.CLIPProcessor.from_pretrained(str(model_dir))
        self.model = transformers.CLIPModel.from_pretrained(str(model_dir)).eval()

    def run(self, items: list[tuple[str, bytes]], batch: int) -> dict[str, float]:
        import torch
        from PIL import Image

        decode_s = model_s = 0.0
        t0 = time.perf_counter()
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            t = time.perf_counter()
            images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in chunk]
            pixels = self.processor.image_processor(images=images, return_tensors="pt")
            decode_s += time.perf_counter() - t
            t = time.perf_counter()
            text = self.processor.tokenizer([p for p, _ in chunk], padding=True,
                                            return_tensors="pt")  # fmt: skip
            with torch.inference_mode():
                out = self.model(**text, pixel_values=pixels["pixel_values"])
                (2.5 * (out.image_embeds * out.text_embeds).sum(-1).clamp(min=0)).tolist()
            model_s += time.perf_counter() - t
        elapsed = time.perf_counter() - t0
        return {"images_per_s": len(items) / elapsed, "seconds": elapsed,
                "decode_preprocess_s": decode_s, "model_s": model_s,
                "decode_images_per_s": len(items) / decode_s,
                "model_images_per_s": len(items) / model_s}  # fmt: skip


def bodies(items: list[tuple[str, bytes]], per_request: int) -> list[bytes]:
    from referee_client.schema import RewardItem, RewardRequest

    out = []
    for start in range(0, len(items), per_request):
        chunk = items[start : start + per_request]
        request = RewardRequest(
            pipeline="clip", options={"return_components": False},  # type: ignore[arg-type]
            items=[RewardItem(id=f"i{start + k}", prompt=p, response_images=[d])
                   for k, (p, d) in enumerate(chunk)],
        )  # fmt: skip
        out.append(request.model_dump_json(exclude_none=True).encode())
    return out


async def over_http(
    url: str, requests: list[bytes], clients: int, n_images: int
) -> dict[str, float]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in requests:
        queue.put_nowait(body)
    latencies: list[float] = []
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t = time.perf_counter()
                response = await client.post("/v1/rewards", content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                response.raise_for_status()
                assert all(r["outcome"] == "scored" for r in response.json()["results"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"images_per_s": n_images / elapsed, "seconds": elapsed,
            "request_p50_s": percentile(latencies, 0.5),
            "request_p99_s": percentile(latencies, 0.99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=64, help="the plain loop's batch size")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the plain loop and of the server (OMP_NUM_THREADS)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    model_dir = save_tiny_clip(tmp / "clip")
    items = make_items(args.images, args.size)
    requests = bodies(items, args.per_request)
    config = {
        "scorers": {"clip": {"kind": "clip", "options": {"model": str(model_dir)},
                             "batching": {"max_batch_tokens": args.batch,
                                          "max_batch_size": args.batch}}},
        "pipelines": {"clip": {"reward": "clip"}},
        "cache": {"backend": "none"},
        "server": {"max_request_bytes": 256 * 1024 * 1024},
    }  # fmt: skip
    (tmp / "clip.yaml").write_text(yaml.safe_dump(config))
    plain = Plain(model_dir)
    plain.run(items[:64], args.batch)  # warm-up
    proc, url, started_s = start_server(tmp / "clip.yaml",
                                        {"OMP_NUM_THREADS": str(args.threads)})  # fmt: skip
    rounds = []
    try:
        asyncio.run(over_http(url, requests[:2], 2, 2 * args.per_request))  # warm-up
        for r in range(args.rounds):
            baseline = plain.run(items, args.batch)
            served = asyncio.run(over_http(url, requests, args.clients, len(items)))
            ratio = served["images_per_s"] / baseline["images_per_s"]
            rounds.append({"plain": baseline, "referee": served, "ratio": ratio})
            print(f"round {r}: plain {baseline['images_per_s']:.1f} img/s (decode+preprocess "
                  f"{baseline['decode_images_per_s']:.1f} img/s, model "
                  f"{baseline['model_images_per_s']:.1f} img/s), referee "
                  f"{served['images_per_s']:.1f} img/s, ratio {ratio:.2f}", flush=True)  # fmt: skip
    finally:
        stop(proc)
    import transformers

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, torch {torch.__version__}, "
                   f"transformers {transformers.__version__}",
        "workload": {"images": args.images, "size": args.size, "batch": args.batch,
                     "torch_threads": args.threads,
                     "clients": args.clients, "per_request": args.per_request,
                     "png_kib_mean": statistics.mean(len(d) for _, d in items) / 1024,
                     "request_mib_mean": statistics.mean(len(b) for b in requests) / 2**20},
        "server_start_s": started_s,
        "rounds": rounds,
        "ratio_median": statistics.median(r["ratio"] for r in rounds),
        "plain_images_per_s_median": statistics.median(r["plain"]["images_per_s"] for r in rounds),
        "referee_images_per_s_median": statistics.median(
            r["referee"]["images_per_s"] for r in rounds),
        "decode_share_of_plain": statistics.median(
            r["plain"]["decode_preprocess_s"] / r["plain"]["seconds"] for r in rounds),
    }  # fmt: skip
    out = Path(__file__).parent / "results" / "clip_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_median", "plain_images_per_s_median",
                                             "referee_images_per_s_median",
                                             "decode_share_of_plain")}))  # fmt: skip


if __name__ == "__main__":
    main()
