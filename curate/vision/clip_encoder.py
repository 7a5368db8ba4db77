"""CLIP models for the filter stage, loaded with open_clip, never from a hub at run time.

A recipe names a model as an open_clip architecture plus weights:
``clip_model: ViT-B-32`` with ``clip_pretrained: openai`` (a tag whose
weights are already in the local Hugging Face or open_clip cache) or a local
checkpoint file. ``weights_problem`` checks that without loading, so a run
refuses missing weights before it starts instead of reaching for a hub.

``curate-demo-clip`` is a tiny CLIP (64x64 images) that this project trains
itself, in well under a minute on a CPU, on pictures drawn like the demo
corpus's frames (coloured shapes with colour and topic words) paired with
narration-like captions. It is DEMO-ONLY: it knows a few dozen words and
nothing about real video. Its checkpoint ships in ``curate/_models/`` (fp16,
gzip) and is rebuilt with ``python -m curate.demo.clip_training train-demo``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parents[1] / "_models"
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


def weights_problem(name: str, pretrained: str | None) -> str | None:
    """Why ``name`` + ``pretrained`` cannot load on this machine without a hub, or None.

    Checks without loading: the architecture is known, and the weights are a
    local file, the shipped demo checkpoint, or already in open_clip's caches."""
    import open_clip

    register_demo_config()
    if name not in open_clip.list_models():
        return (f"{RECIPE_KEY}: unknown open_clip model {name!r}; e.g. ViT-B-32, or {DEMO_MODEL} for the "
                f"offline demo (see open_clip.list_models())")
    if name == DEMO_MODEL and not pretrained:
        return None if DEMO_CHECKPOINT.is_file() else f"{RECIPE_KEY}: the demo checkpoint {DEMO_CHECKPOINT} is missing"
    if not pretrained:
        return (f"{RECIPE_KEY}: {name!r} needs weights: set clip_pretrained to a local checkpoint file or an "
                f"open_clip tag whose weights are in the local cache")
    if Path(pretrained).suffix or "/" in pretrained:
        return None if Path(pretrained).is_file() else f"{RECIPE_KEY}: checkpoint file {pretrained} not found"
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        return f"{RECIPE_KEY}: {name!r} has no weights tagged {pretrained!r} (tags: {tags})"
    if _cached(cfg):
        return None
    where = cfg["hf_hub"].rsplit("/", 1)[0] if cfg.get("hf_hub") else cfg.get("url", "")
    fetch = (f"`huggingface-cli download {where}` where there is network access (it fills the Hugging Face "
             f"cache; copy ~/.cache/huggingface to this machine)") if cfg.get("hf_hub") else \
        f"download {where} into ~/.cache/clip/ where there is network access"
    return (f"{RECIPE_KEY}: weights {name}/{pretrained} are not on this machine, and curate fetches nothing "
            f"from a model hub at run time: {fetch}, or set clip_pretrained to a local checkpoint file, or use "
            f"clip_model: {DEMO_MODEL} with clip_pretrained: null (offline demo only)")


def _cached(cfg: dict) -> bool:
    """Are these weights already where open_clip looks (file, Hugging Face cache, ~/.cache/clip)?"""
    import os

    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
            return True
    if cfg.get("url"):
        return (Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])).is_file()
    return False


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
    """One loaded model; batched, L2-normalised embeddings as float32 numpy.

    On a GPU the model runs in fp16 (``precision: auto``); on the CPU always in
    fp32 (half precision there is slower, and some kernels lack it)."""

    def __init__(self, name: str, pretrained: str | None, threads: int | None = None, batch_size: int = 64,
                 device: str = "cpu", precision: str = "auto"):
        import torch

        self.model, self.tokenizer = load_model(name, pretrained, threads)
        self.preprocess_cfg = dict(self.model.visual.preprocess_cfg)
        self.batch_size = batch_size
        self.device = device
        self.dtype = torch.float16 if device == "cuda" and precision in ("auto", "fp16") else torch.float32
        if device == "cpu" and precision == "fp16":
            logging.getLogger("curate.filter").warning("precision fp16 is switched off on the CPU: fp32")
        self.model.to(device=device, dtype=self.dtype)

    def preprocess(self, frames: list[np.ndarray]) -> np.ndarray:
        """Decoded BGR frames -> the model's input batch (run it off the main thread to feed a GPU)."""
        return preprocess_bgr(frames, self.preprocess_cfg)

    def encode_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        import torch

        chunks = []
        for k in range(0, len(frames), self.batch_size):
            batch = torch.from_numpy(self.preprocess(frames[k:k + self.batch_size]))
            chunks.append(self.embed_images(batch))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def embed_images(self, batch) -> np.ndarray:
        """A preprocessed batch (NCHW float32 tensor or array) -> normalised float32 embeddings."""
        import torch

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        if self.device != "cpu":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            emb = self.model.encode_image(batch.to(self.dtype))
            return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts longer than the model's context are cut by its tokenizer (77 tokens for OpenAI CLIP)."""
        import torch

        chunks = []
        with torch.inference_mode():
            for k in range(0, len(texts), self.batch_size):
                emb = self.model.encode_text(self.tokenizer(texts[k:k + self.batch_size]).to(self.device))
                chunks.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if self.model.text_projection is not None else 0


def _read_demo_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ClipWeightsMissing(f"{RECIPE_KEY}: demo checkpoint {path} is missing; rebuild it with "
                                 f"`python -m curate.demo.clip_training train-demo`")
    with gzip.open(path, "rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state.items()}
