"""Train ``curate-demo-clip``: the tiny demo-only CLIP model shipped in ``curate/_models/``.

It learns pictures drawn like the demo corpus's frames (coloured shapes with
colour and topic words) paired with narration-like captions, in well under a
minute on a CPU. Rebuild the checkpoint with ``python -m curate.demo.clip_training train-demo``.
"""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import numpy as np

from ..vision.clip_encoder import DEMO_CHECKPOINT, DEMO_MODEL, preprocess_bgr, register_demo_config


def _demo_caption(rng: random.Random, shape: str, color: str, topic: str) -> str:
    from .corpus import scene_sentences

    sentences = scene_sentences(shape, color, topic)
    keep = [s for s in sentences if rng.random() < 0.7] or [rng.choice(sentences)]
    return " ".join(keep)


def train_demo_clip(out_path: Path = DEMO_CHECKPOINT, steps: int = 300, batch: int = 96, seed: int = 0,
                    pool: int = 768) -> Path:
    """Train ``curate-demo-clip`` on demo-style pictures; write an fp16 gzip checkpoint."""
    import torch
    import torch.nn.functional as F

    from .corpus import BACKGROUNDS, COLORS, SHAPE_TRAITS, TOPICS, render_scene

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

    parser = argparse.ArgumentParser(prog="python -m curate.demo.clip_training")
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
