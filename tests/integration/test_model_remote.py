"""`backend: remote` with `api: tei`, against a small real HTTP server written here that
implements text-embeddings-inference's documented contract (router/src/http/types.rs and
server.rs: `GET /info` with model_id, model_type.classifier.id2label, max_input_length,
max_client_batch_size; `POST /predict` with `inputs` as a batch of [text] or [text,
text] and `raw_scores`, answering per input a list of {score, label} sorted by score,
highest first; errors as {error, error_type} with 413/422/429/424). A stand-in: TEI is a
Rust binary that cannot be installed on these machines. Its numbers are real: it runs
the same MiniLM reward model with transformers. The same backend against a real vLLM
server: tests/e2e/test_model_remote_vllm.py.

The retry, refusal, timeout and start-up behaviours are the backend's own, whatever the
server: they are driven here by telling the stand-in how to misbehave."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from referee.errors import item_outcome
from referee.scorers import scorer_class
from referee.scorers.base import ScoreInput, ScoreResult

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4


@dataclass
class Behaviour:
    """How the stand-in answers: the first ``busy`` requests get 429 with Retry-After
    ``retry_after``; ``down``: every /predict gets 503; ``slow_s``: each answer waits."""

    busy: int = 0
    retry_after: float = 0.2
    down: bool = False
    slow_s: float = 0.0
    model_id: str = ""
    posts: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class TEIStandIn:
    """TEI's /info and /predict over a real sequence-classification model."""

    def __init__(self, model_dir: Path, behaviour: Behaviour) -> None:
        self.tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(model_dir)
        ).eval()
        self.b = behaviour
        self.id2label = {str(i): label for i, label in self.model.config.id2label.items()}

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.b.model_id, "model_dtype": "float32",
            "model_type": {"classifier": {"id2label": self.id2label,
                           "label2id": {v: int(k) for k, v in self.id2label.items()}}},
            "max_input_length": 512, "max_client_batch_size": 4, "auto_truncate": False,
            "max_concurrent_requests": 512, "max_batch_tokens": 16384, "version": "stand-in",
        }  # fmt: skip

    def predict(self, body: dict[str, Any]) -> tuple[int, Any]:
        inputs = body["inputs"]
        if len(inputs) > 4:
            return 413, {"error": "batch size 5 > maximum allowed batch size 4",
                         "error_type": "validation"}  # fmt: skip
        for seq in inputs:
            if any("UNTOKENIZABLE" in text for text in seq):
                return 422, {"error": "Tokenization error", "error_type": "tokenizer"}
        answers = []
        for seq in inputs:
            enc = self.tok(*seq, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**enc).logits[0].float()
            scores = logits if body.get("raw_scores") else torch.softmax(logits, -1)
            predictions = [{"score": float(s), "label": self.id2label[str(i)]}
                           for i, s in enumerate(scores)]  # fmt: skip
            answers.append(sorted(predictions, key=lambda p: p["score"], reverse=True))
        return 200, answers


@pytest.fixture(scope="module")
def standin(minilm_classifier: Path) -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour(model_id=str(minilm_classifier))
    tei = TEIStandIn(minilm_classifier, behaviour)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/info":
                self.answer(200, tei.info())
            else:
                self.answer(404, {"error": "not found", "error_type": "validation"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            b = behaviour
            with b.lock:
                b.posts.append(time.monotonic())
                b.in_flight += 1
                b.most_in_flight = max(b.most_in_flight, b.in_flight)
                busy = b.busy > 0
                b.busy -= busy
            try:
                time.sleep(b.slow_s)
                if self.path != "/predict":
                    self.answer(404, {"error": "not found", "error_type": "validation"})
                elif b.down:
                    self.answer(503, {"error": "unhealthy", "error_type": "unhealthy"})
                elif busy:
                    self.answer(429, {"error": "Model is overloaded", "error_type": "overloaded"},
                                {"Retry-After": str(b.retry_after)})  # fmt: skip
                else:
                    self.answer(*tei.predict(body))
            finally:
                with b.lock:
                    b.in_flight -= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tei(standin: tuple[str, Behaviour]) -> Iterator[tuple[str, Behaviour]]:
    url, behaviour = standin
    yield url, behaviour
    behaviour.busy, behaviour.down, behaviour.slow_s = 0, False, 0.0
    behaviour.posts.clear()
    behaviour.most_in_flight = 0


def items(*responses: str) -> list[ScoreInput]:
    return [ScoreInput(id=str(i), prompt="What is the capital of France?", response=r,
                       reference=None, group=None, messages=None, metadata=None)
            for i, r in enumerate(responses)]  # fmt: skip


RESPONSES = ("Paris.", "London is the capital.", "It is Paris, on the Seine.", "Lyon?", "Paris!")


async def score(model: Path, inputs: list[ScoreInput], **options: Any) -> list[ScoreResult]:
    cls = scorer_class("classifier")
    opts = {"model": str(model), "input": "pair", "aspects": {"second": 1}, **options}
    scorer = cls("rm", cls.Options.model_validate(opts))
    await scorer.setup()
    try:
        return await scorer.score_batch(inputs)
    finally:
        await scorer.close()


def remote(url: str, **settings: Any) -> dict[str, Any]:
    return {"backend": "remote", "remote": {"url": url, "api": "tei", "backoff_s": 0.05,
                                            **settings}}  # fmt: skip


async def test_tei_predict_gives_the_transformers_backends_logits(
    tei: tuple[str, Behaviour], minilm_classifier: Path
) -> None:
    """Five items in requests of at most TEI's max_client_batch_size (4): the logits at
    `index` and the aspects, read back by label from the sorted predictions."""
    url, behaviour = tei
    got = await score(minilm_classifier, items(*RESPONSES), **remote(url))
    want = await score(minilm_classifier, items(*RESPONSES))
    for have, expected in zip(got, want, strict=True):
        assert have.error is None, have.error
        assert have.value == pytest.approx(expected.value, abs=TOL)
        assert have.aspects["second"] == pytest.approx(expected.aspects["second"], abs=TOL)
    assert len(behaviour.posts) == 1 + 2  # the start-up probe, then 4 + 1 items


async def test_an_input_the_server_refuses_fails_alone(
    tei: tuple[str, Behaviour], minilm_classifier: Path
) -> None:
    """TEI refuses a whole request for one bad input (422): the backend splits it until
    the bad input stands alone; every other item gets its number, in order."""
    url, _ = tei
    inputs = items("Paris.", "UNTOKENIZABLE", "Lyon?", "Paris!")
    got = await score(minilm_classifier, inputs, **remote(url))
    assert [r.error is None for r in got] == [True, False, True, True]
    assert got[1].error_type == "invalid_input" and "422" in (got[1].error or "")
    assert "Tokenization error" in (got[1].error or "")
    want = await score(minilm_classifier, items("Paris.", "Lyon?", "Paris!"))
    assert [got[0].value, got[2].value, got[3].value] == pytest.approx(
        [w.value for w in want], abs=TOL
    )


async def test_429_is_retried_after_the_servers_retry_after(
    tei: tuple[str, Behaviour], minilm_classifier: Path
) -> None:
    url, behaviour = tei
    cls = scorer_class("classifier")
    opts = {"model": str(minilm_classifier), "input": "pair", **remote(url)}
    scorer = cls("rm", cls.Options.model_validate(opts))
    await scorer.setup()
    try:
        behaviour.posts.clear()
        behaviour.busy, behaviour.retry_after = 2, 0.3
        got = await scorer.score_batch(items("Paris."))
    finally:
        await scorer.close()
    assert got[0].error is None and got[0].value is not None
    assert len(behaviour.posts) == 3
    gaps = [b - a for a, b in zip(behaviour.posts, behaviour.posts[1:], strict=False)]
    assert min(gaps) >= 0.28, gaps  # waited as told, not the 0.05 s backoff


async def test_a_server_that_stays_down_fails_items_as_retryable(
    tei: tuple[str, Behaviour], minilm_classifier: Path
) -> None:
    url, behaviour = tei
    cls = scorer_class("classifier")
    opts = {"model": str(minilm_classifier), "input": "pair", **remote(url, max_retries=2)}
    scorer = cls("rm", cls.Options.model_validate(opts))
    await scorer.setup()
    try:
        behaviour.posts.clear()
        behaviour.down = True
        got = await scorer.score_batch(items("Paris.", "Lyon?"))
        assert scorer.health()["last_error"].endswith("503: unhealthy")
    finally:
        await scorer.close()
    assert len(behaviour.posts) == 3  # one request, tried three times
    for result in got:
        assert result.value is None and result.error_type == "model_unavailable"
        assert "did not answer after 3 tries" in (result.error or "")
        assert item_outcome(result.error_type) == ("failed", True)


async def test_a_slow_server_times_out_and_concurrency_stays_bounded(
    tei: tuple[str, Behaviour], minilm_classifier: Path
) -> None:
    url, behaviour = tei
    behaviour.slow_s = 0.3
    settings = remote(url, max_concurrency=2, max_items_per_request=1)
    got = await score(minilm_classifier, items(*RESPONSES), **settings)
    assert all(r.error is None for r in got)
    assert behaviour.most_in_flight == 2  # five requests, never more than two at once
    cls = scorer_class("classifier")
    opts = {"model": str(minilm_classifier), "input": "pair",
            **remote(url, timeout_s=1.5, max_retries=1)}  # fmt: skip
    scorer = cls("rm", cls.Options.model_validate(opts))
    behaviour.slow_s = 0.0
    await scorer.setup()
    try:
        behaviour.slow_s = 3.0
        got = await scorer.score_batch(items("Paris."))
    finally:
        await scorer.close()
    assert got[0].error_type == "model_unavailable" and "ReadTimeout" in (got[0].error or "")


async def test_an_unreachable_server_or_another_model_stops_the_start(
    tei: tuple[str, Behaviour], minilm_classifier: Path, minilm_classifier_b: Path
) -> None:
    from tests.e2e.server import free_port

    with pytest.raises(RuntimeError, match=r"cannot reach the tei server at http://127\.0\.0\.1"):
        await score(minilm_classifier, [], **remote(f"http://127.0.0.1:{free_port()}"))
    url, _ = tei
    with pytest.raises(ValueError, match=r"serves \[.*minilm-rm.*\], not .*minilm-rm-b"):
        await score(minilm_classifier_b, [], **remote(url))
    got = await score(minilm_classifier_b, items("Paris."),
                      **remote(url, served_model=str(minilm_classifier)))  # fmt: skip
    assert got[0].error is None  # told the name it serves: trusted


def test_options_a_backend_cannot_honour_fail_when_the_config_is_built(
    minilm_classifier: Path,
) -> None:
    cls = scorer_class("prm")
    opts = cls.Options.model_validate(
        {"model": str(minilm_classifier), **remote("http://127.0.0.1:1")}
    )
    with pytest.raises(ValueError, match="TEI serves no token classification"):
        cls("prm", opts)
    with pytest.raises(ValueError, match="backend remote needs `remote`"):
        cls.Options.model_validate({"model": "m", "backend": "remote"})
    sim = scorer_class("similarity")
    with pytest.raises(ValueError, match="lexical metrics load no model"):
        sim("s", sim.Options.model_validate({"metric": "bleu", "backend": "vllm"}))
