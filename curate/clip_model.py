"""CLIP models for the filter stage, loaded with open_clip, never from a hub at run time.

A recipe names a model as an open_clip architecture plus weights:
``clip_model: ViT-B-32`` with ``clip_pretrained: openai`` (a tag open_clip
downloads on machines with hub access) or a local checkpoint file.

``curate-demo-clip`` is a tiny CLIP (64x64 images) that this project trains
itself, in well under a minute on a CPU, on pictures drawn like the demo
corpus's frames (coloured shapes with colour and topic words) paired with
narration-like captions. It is DEMO-ONLY: it knows a few dozen words and
nothing about real video. Its checkpoint ships in ``curate/_models/`` (fp16,
gzip) and is rebuilt with ``python -m curate.clip_model train-demo``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import random
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "_models"
DEMO_MODEL = "curate-demo-clip"
DEMO_CHECKPOINT = MODELS_DIR / f"{DEMO_MODEL}.pt.gz"
RECIPE_KEY = "stages.filter.clip_model"


class ClipWeightsMissing(RuntimeError):
    """The named weights cannot be loaded here; the message says which recipe key to change."""


def register_demo_config() -> None:
    """Make ``curate-demo-clip`` known to open_clip (idempotent)."""
    import open_clip

    if DEMO_MODEL not in open_clip.list_models():
        open_clip.add_model_config(MODELS_DIR / f"{DEMO_MODEL}.json")


def load_model(name: str, pretrained: str | None, threads: int | None = None):
    """(model in eval mode, tokenizer) for ``name`` + ``pretrained`` (tag or file path).

    ``curate-demo-clip`` with no ``pretrained`` loads the shipped demo checkpoint.
    """
    import open_clip
    import torch

    if threads:
        torch.set_num_threads(threads)
    register_demo_config()
    if name not in open_clip.list_models():
        raise ClipWeightsMissing(f"{RECIPE_KEY}: unknown open_clip model {name!r}; e.g. ViT-B-32, or "
                                 f"{DEMO_MODEL} for the offline demo (see open_clip.list_models())")
    demo = name == DEMO_MODEL
    kwargs = {"force_preprocess_cfg": {"resize_mode": "squash"}} if demo else {}
    if demo and not pretrained:
        with _quiet_random_init_warning():  # weights are loaded on the next line
            model = open_clip.create_model(name, pretrained=None, **kwargs)
        model.load_state_dict(_read_demo_checkpoint(DEMO_CHECKPOINT))
    elif pretrained and (Path(pretrained).suffix or "/" in pretrained) and not Path(pretrained).is_file():
        raise ClipWeightsMissing(f"{RECIPE_KEY}: checkpoint file {pretrained} (clip_pretrained) not found")
    elif pretrained and Path(pretrained).is_file() and pretrained.endswith(".gz"):
        with _quiet_random_init_warning():
            model = open_clip.create_model(name, pretrained=None, **kwargs)
        model.load_state_dict(_read_demo_checkpoint(Path(pretrained)))
    else:
        if not pretrained:
            raise ClipWeightsMissing(f"{RECIPE_KEY}: {name!r} needs weights: set clip_pretrained to an "
                                     f"open_clip tag (e.g. 'openai') or a local checkpoint file")
        try:
            model = open_clip.create_model(name, pretrained=pretrained, **kwargs)
        except Exception as exc:  # open_clip wraps download failures in RuntimeError
            raise ClipWeightsMissing(
                f"{RECIPE_KEY}: cannot load weights {pretrained!r} for {name!r} ({exc}). This machine may have "
                f"no hub access: point clip_pretrained at a local checkpoint file, or use "
                f"clip_model: {DEMO_MODEL} (offline demo only)") from exc
    model.eval()
    return model, open_clip.get_tokenizer(name)


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip warns 'initialized randomly' when we load the weights ourselves right after."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized randomly" not in record.getMessage()

    drop, root = Drop(), logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def preprocess_bgr(frames: list[np.ndarray], cfg: dict) -> np.ndarray:
    """BGR uint8 frames -> normalised NCHW float32 batch, per the model's preprocess config.

    OpenCV instead of open_clip's PIL transforms: several times faster per
    frame, so the model forward, not the preprocessing, sets the pace.
    """
    import cv2

    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    out = np.empty((len(frames), size, size, 3), np.float32)
    for k, frame in enumerate(frames):
        h, w = frame.shape[:2]
        if cfg.get("resize_mode") == "squash":
            img = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        else:  # "shortest": short side to size, then centre crop
            scale = size / min(h, w)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            img = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
            y, x = (nh - size) // 2, (nw - size) // 2
            img = img[y:y + size, x:x + size]
        out[k] = img[:, :, ::-1]
    out = (out / 255.0 - np.asarray(cfg["mean"], np.float32)) / np.asarray(cfg["std"], np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


class ClipEncoder:
    """One loaded model; batched, L2-normalised embeddings as float32 numpy."""

    def __init__(self, name: str, pretrained: str | None, threads: int | None = None, batch_size: int = 64):
        self.model, self.tokenizer = load_model(name, pretrained, threads)
        self.preprocess_cfg = dict(self.model.visual.preprocess_cfg)
        self.batch_size = batch_size

    def encode_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        import torch

        chunks = []
        for k in range(0, len(frames), self.batch_size):
            batch = torch.from_numpy(preprocess_bgr(frames[k:k + self.batch_size], self.preprocess_cfg))
            chunks.append(self.embed_images(batch))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def embed_images(self, batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return torch.nn.functional.normalize(self.model.encode_image(batch), dim=-1).numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts longer than the model's context are cut by its tokenizer (77 tokens for OpenAI CLIP)."""
        import torch

        chunks = []
        with torch.inference_mode():
            for k in range(0, len(texts), self.batch_size):
                emb = self.model.encode_text(self.tokenizer(texts[k:k + self.batch_size]))
                chunks.append(torch.nn.functional.normalize(emb, dim=-1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if self.model.text_projection is not None else 0


# ---------------------------------------------------------------- demo model


def _read_demo_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ClipWeightsMissing(f"{RECIPE_KEY}: demo checkpoint {path} is missing; rebuild it with "
                                 f"`python -m curate.clip_model train-demo`")
    with gzip.open(path, "rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state.items()}


def _demo_caption(rng: random.Random, shape: str, color: str, topic: str) -> str:
    from .demo.corpus import scene_sentences

    sentences = scene_sentences(shape, color, topic)
    keep = [s for s in sentences if rng.random() < 0.7] or [rng.choice(sentences)]
    return " ".join(keep)


def train_demo_clip(out_path: Path = DEMO_CHECKPOINT, steps: int = 300, batch: int = 96, seed: int = 0,
                    pool: int = 768) -> Path:
    """Train ``curate-demo-clip`` on demo-style pictures; write an fp16 gzip checkpoint."""
    import torch
    import torch.nn.functional as F

    from .demo.corpus import BACKGROUNDS, COLORS, SHAPE_TRAITS, TOPICS, render_scene

    register_demo_config()
    import open_clip

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = open_clip.create_model(DEMO_MODEL, pretrained=None, force_preprocess_cfg={"resize_mode": "squash"})
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL)
    cfg = dict(model.visual.preprocess_cfg)
    combos = [(rng.choice(sorted(SHAPE_TRAITS)), rng.choice(sorted(COLORS)), rng.choice(TOPICS),
               rng.choice(BACKGROUNDS)) for _ in range(pool)]
    pictures = [np.asarray(render_scene(s, c, t, bg))[:, :, ::-1] for s, c, t, bg in combos]
    images = torch.from_numpy(preprocess_bgr(pictures, cfg))
    used_tokens: set[int] = set()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        idx = rng.sample(range(pool), batch)
        texts = tokenizer([_demo_caption(rng, *combos[i][:3]) for i in idx])
        used_tokens.update(texts.unique().tolist())
        imgs = images[idx]
        # Light jitter so compressed video frames still look familiar.
        imgs = imgs * (1 + 0.1 * (torch.rand(len(idx), 1, 1, 1) - 0.5)) + 0.05 * torch.randn_like(imgs)
        shift = rng.randint(-4, 4), rng.randint(-4, 4)
        imgs = torch.roll(imgs, shifts=shift, dims=(2, 3))
        img_f = F.normalize(model.encode_image(imgs), dim=-1)
        txt_f = F.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.T
        # Captions can repeat in a batch: same (shape, colour, topic) counts as a match.
        keys = [combos[i][:3] for i in idx]
        target = torch.tensor([[float(a == b) for b in keys] for a in keys])
        target = target / target.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    state = {k: v.detach().half() for k, v in model.state_dict().items()}
    # Rows of tokens never seen stay as random init; zero them so the file compresses.
    keep = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
    keep[list(used_tokens)] = True
    state["token_embedding.weight"][~keep] = 0
    buf = io.BytesIO()
    torch.save(state, buf)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=9) as f:
        f.write(buf.getvalue())
    tmp.replace(out_path)
    return out_path


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m curate.clip_model")
    sub = parser.add_subparsers(dest="cmd", required=True)
    train = sub.add_parser("train-demo", help="train the demo-only CLIP and write its checkpoint")
    train.add_argument("--out", type=Path, default=DEMO_CHECKPOINT)
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    print(train_demo_clip(args.out, steps=args.steps, seed=args.seed))


if __name__ == "__main__":
    main()
