"""The reward a trainer gets over the network is exactly what the model gives in a plain
script: for each model scorer kind, a real `referee serve` process scores a batch of items
of different lengths (batched and padded server-side) and each reward is compared with an
unbatched transformers forward pass written out here (|Δ| ≤ 1e-4 in fp32)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.test_server_process import running_server
from tests.models import minilm_dir

torch = pytest.importorskip("torch", reason="model scorers need the models extra")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
PROMPTS = ["What is 2+3?", "Name the capital of France and say why it matters. " * 3, "Hi"]
RESPONSES = [
    "5",
    "First, add 2 and 3.\n\nThat gives 5.\n\nSo the answer is \\boxed{5}.",
    "Paris is the capital of France. " * 12 + "The answer is \\boxed{Paris}.",
]
FOLLOWUPS = {"positive": ["Thanks, that is right!"], "negative": ["No, that is wrong."]}


def items() -> list[dict[str, Any]]:
    out = []
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        out.append({"id": f"i{i}", "prompt": p, "response": r, "reference": RESPONSES[-1 - i],
                    "group": "g"})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_classifier: Path,
    minilm_prm: Path,
    smollm: Path,
    smollm_classifier: Path,
) -> Iterator[str]:
    scorers: dict[str, Any] = {
        "rm_pair": {"kind": "classifier",
                    "options": {"model": str(minilm_classifier), "input": "pair",
                                "aspects": {"first": 1, "second": 2}}},
        "rm_chat": {"kind": "classifier", "options": {"model": str(smollm_classifier)}},
        "prm": {"kind": "prm", "options": {"model": str(minilm_prm), "step_token": "[unused0]",
                                           "aggregate": "min"}},
        "sim": {"kind": "similarity", "options": {"model": str(minilm_dir())}},
        "sim_group": {"kind": "similarity",
                      "options": {"model": str(minilm_dir()), "against": "group"}},
        "logprob": {"kind": "likelihood", "options": {"model": str(smollm)}},
        "confidence": {"kind": "likelihood",
                       "options": {"model": str(smollm), "mode": "answer_confidence"}},
        "followup": {"kind": "likelihood",
                     "options": {"model": str(smollm), "mode": "followup", **FOLLOWUPS}},
    }  # fmt: skip
    config = {
        "scorers": scorers,
        "pipelines": {name: {"reward": name} for name in scorers}
        | {"rm_aspect": {"reward": "rm_pair.second"}},
    }
    path = tmp_path_factory.mktemp("cfg") / "models.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_server("--config", str(path)) as (url, _):
        yield url


def served(url: str, pipeline: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/v1/rewards", json={"pipeline": pipeline, "items": items()},
                          timeout=120)  # fmt: skip
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [f"i{i}" for i in range(len(PROMPTS))]
    assert all(r["error"] is None for r in results), results
    return results


def load(cls: str, path: Path) -> tuple[Any, Any]:
    model = getattr(transformers, cls).from_pretrained(str(path)).eval()
    return transformers.AutoTokenizer.from_pretrained(str(path)), model


def test_classifier_pair_rm_over_http_equals_a_plain_forward_pass(
    server: str, minilm_classifier: Path
) -> None:
    tok, model = load("AutoModelForSequenceClassification", minilm_classifier)
    results = served(server, "rm_pair")
    aspects = served(server, "rm_aspect")
    for item, result, aspect in zip(items(), results, aspects, strict=True):
        with torch.inference_mode():
            logits = model(**tok(item["prompt"], item["response"], return_tensors="pt")).logits[0]
        assert abs(result["reward"] - float(logits[0])) <= TOL
        assert abs(aspect["reward"] - float(logits[2])) <= TOL


def test_classifier_chat_rm_over_http_equals_a_plain_forward_pass(
    server: str, smollm_classifier: Path
) -> None:
    tok, model = load("AutoModelForSequenceClassification", smollm_classifier)
    for item, result in zip(items(), served(server, "rm_chat"), strict=True):
        chat = [{"role": "user", "content": item["prompt"]},
                {"role": "assistant", "content": item["response"]}]  # fmt: skip
        ids = tok(tok.apply_chat_template(chat, tokenize=False), return_tensors="pt")
        with torch.inference_mode():
            expected = float(model(**ids).logits[0, 0])
        assert abs(result["reward"] - expected) <= TOL


def test_prm_over_http_equals_a_plain_forward_pass(server: str, minilm_prm: Path) -> None:
    tok, model = load("AutoModelForTokenClassification", minilm_prm)
    tok.add_special_tokens({"additional_special_tokens": ["[unused0]"]})  # one token, in vocab
    step_id = tok.convert_tokens_to_ids("[unused0]")
    for item, result in zip(items(), served(server, "prm"), strict=True):
        steps = [s.strip() for s in item["response"].split("\n\n") if s.strip()]
        enc = tok(item["prompt"], "[unused0]".join(steps) + "[unused0]", return_tensors="pt")
        with torch.inference_mode():
            probs = model(**enc).logits[0].softmax(-1)[:, 1]
        expected = [float(p) for p in probs[enc["input_ids"][0] == step_id]]
        assert len(result["steps"]) == len(steps) == len(expected)
        assert max(abs(a - b) for a, b in zip(result["steps"], expected, strict=True)) <= TOL
        assert abs(result["reward"] - min(expected)) <= TOL


def embed(tok: Any, model: Any, text: str) -> Any:
    enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden.mean(0), dim=0)


def test_similarity_over_http_equals_plain_embeddings(server: str) -> None:
    tok, model = load("AutoModel", minilm_dir())
    vectors = [embed(tok, model, r) for r in RESPONSES]
    for i, result in enumerate(served(server, "sim")):
        expected = float(vectors[i] @ vectors[-1 - i])  # the reference is RESPONSES[-1 - i]
        assert abs(result["reward"] - expected) <= TOL
    for i, result in enumerate(served(server, "sim_group")):
        peers = [float(vectors[i] @ vectors[j]) for j in range(len(RESPONSES)) if j != i]
        assert abs(result["reward"] - sum(peers) / len(peers)) <= TOL


def response_logprobs(tok: Any, model: Any, prompt_text: str, response: str) -> list[float]:
    head = tok(prompt_text)["input_ids"]
    body = tok(response, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([head + body])).logits[0].log_softmax(-1)
    return [float(logits[len(head) + j - 1, t]) for j, t in enumerate(body)]


def test_likelihood_over_http_equals_plain_token_logprobs(server: str, smollm: Path) -> None:
    tok, model = load("AutoModelForCausalLM", smollm)
    logprob, confidence = served(server, "logprob"), served(server, "confidence")
    followup = served(server, "followup")
    for i, item in enumerate(items()):
        user = [{"role": "user", "content": item["prompt"]}]
        head = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        lps = response_logprobs(tok, model, head, item["response"])
        assert abs(logprob[i]["reward"] - sum(lps) / len(lps)) <= TOL

        # answer confidence: mean probability of the tokens inside \boxed{...}
        enc = tok(item["response"], add_special_tokens=False, return_offsets_mapping=True)
        start = item["response"].rfind("\\boxed{")
        if start < 0:
            assert (
                confidence[i]["reward"] == 0.0
                and "no answer" in confidence[i]["info"]["confidence"]
            )
        else:
            a, b = start + len("\\boxed{"), item["response"].rindex("}")
            inside = [j for j, (s, e) in enumerate(enc["offset_mapping"]) if s < b and e > a]
            probs = [torch.tensor(lps[j]).exp().item() for j in inside]
            assert abs(confidence[i]["reward"] - sum(probs) / len(probs)) <= TOL

        chat = [*user, {"role": "assistant", "content": item["response"]}]
        marker = "@@FOLLOWUP@@"
        text = tok.apply_chat_template([*chat, {"role": "user", "content": marker}], tokenize=False)
        prefix = text[: text.index(marker)]

        def mean_lp(utterance: str, prefix: str = prefix) -> float:
            values = response_logprobs(tok, model, prefix, utterance)
            return sum(values) / len(values)

        expected = mean_lp(FOLLOWUPS["positive"][0]) - mean_lp(FOLLOWUPS["negative"][0])
        assert abs(followup[i]["reward"] - expected) <= TOL
