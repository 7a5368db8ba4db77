"""Training throughput of the reference model's ``tiny`` backbone on this machine.

Streams shaped like the demo release's (15 one-second visual tokens, ~3
words a second, 64-d frame embeddings) go through the same collate, model,
loss and AdamW step as `curate validate`, in this process (no Ray), for
``--seconds``; it prints tokens per second (every position: visual and
word tokens) and word tokens per second, for the recipe defaults and for
the size the tests use.

    .venv/bin/python bench/refmodel_bench.py [--seconds 20] [--threads 1] [--device cpu|cuda]

A GPU run of `curate validate` goes through Ray Train: see docs/refmodel.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.recipe import TinyConfig, ValidateConfig  # noqa: E402
from curate.refmodel.data import VISUAL, Stream  # noqa: E402


def synthetic_streams(n: int, vocab: int, seconds: int = 15, words_per_s: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids, second, word, w = [1], [-1], [-1], 0
        for k in range(seconds):
            ids.append(VISUAL), second.append(k), word.append(-1)
            for _ in range(words_per_s):
                piece = list(rng.integers(4, vocab, rng.integers(1, 3)))
                ids += piece
                second += [-1] * len(piece)
                word += [w] * len(piece)
                w += 1
        out.append(Stream(np.asarray(ids), np.asarray(second), np.asarray(word), w))
    return out


def measure(cfg: ValidateConfig, seconds: float, device: str) -> dict:
    import torch

    from curate.refmodel.model import build, n_params, word_nll
    from curate.refmodel.train import collate

    vocab, dim = 1000, 64
    streams = synthetic_streams(256, vocab)
    vis = [np.random.default_rng(i).standard_normal((15, dim)).astype(np.float32) for i in range(256)]
    torch.manual_seed(0)
    model = build(cfg, vocab, dim, 512).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    tokens = words = steps = 0
    t0, end = time.perf_counter(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        pick = [(steps * cfg.batch_size + j) % len(streams) for j in range(cfg.batch_size)]
        ids, rows, is_vis, attention, word = collate([streams[i] for i in pick], [vis[i] for i in pick],
                                                     [None] * len(pick), device)
        nll, mask = word_nll(model(ids, rows, is_vis, attention, blind=False), ids, word)
        loss = nll.sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tokens += int(attention.sum())
        words += int(mask.sum())
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"params": n_params(model), "steps": steps, "tokens_per_s": tokens / dt, "word_tokens_per_s": words / dt,
            "steps_per_s": steps / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sizes = {"recipe default": ValidateConfig(),
             "demo_large/tests": ValidateConfig(batch_size=8, tiny=TinyConfig(d_model=64, vocab_size=300))}
    print(f"tiny backbone, clips of ~62 tokens, {args.threads} thread(s), {args.device}")
    for label, cfg in sizes.items():
        tiny = cfg.tiny
        r = measure(cfg, args.seconds, args.device)
        print(f"  {label:<16} d_model {tiny.d_model:>4}, batch {cfg.batch_size:>2}, {r['params'] / 1e6:.2f} M params: "
              f"{r['tokens_per_s']:,.0f} tokens/s, {r['word_tokens_per_s']:,.0f} word tokens/s, "
              f"{r['steps_per_s']:.1f} steps/s ({r['steps']} steps)")


if __name__ == "__main__":
    main()
