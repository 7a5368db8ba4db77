"""Do the per-clip value flags find the clips known to be bad?

A control release: the 24-video demo release (`curate demo --videos 24`, built once
in --workdir), copied with a known fraction of its clips corrupted (each carries the
words of a clip of another video, moved into its time; ids recorded). `curate value`
scores the copy; the bench prints, per flag, how many corrupted clips it recovers
(recall) and how many of the clips it flags are corrupted (precision), against the
goal of 0.8 for both, and the same flags on the clean release (false alarms).

    .venv/bin/python bench/value_bench.py                       # 20% corrupted, 5 folds, tiny, 300 steps (~10 min)
    .venv/bin/python bench/value_bench.py --fraction 0.2 --folds 5 --steps 300 --seed 0 --no-clean
    .venv/bin/python bench/value_bench.py --backbone smollm2-135m   # the bundled SmolLM2, frozen: 60 steps x 2, lr 0.03

Both copies (corrupted and clean) are the bench's own: it writes the backbone's settings into
their recipe.yaml's ``validate:`` section, which `curate value RELEASE` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.refmodel.controls import swap_words_copy  # noqa: E402

FLAGS = ("frames_do_not_help", "unlearnable")
GOAL = 0.8
# Per backbone, the validate settings the bench trains with (docs/refmodel.md: SmolLM2's are the
# recommended 2-core settings measured there).
BACKBONES = {
    "tiny": {"steps": 300},
    "smollm2-135m": {"backbone": "smollm2-135m", "steps": 60, "batch_size": 2, "lr": 0.03, "checkpoint_every": 20},
}


def demo_release(workdir: Path) -> Path:
    release = workdir / "catalogs" / "demo-24" / "catalog" / "releases" / "v1"
    if not (release / "manifest.json").is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "curate.cli", "demo", "--videos", "24", "--port", "0"], cwd=workdir,
                       check=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    return release


def set_validate(release: Path, settings: dict) -> None:
    """Merge ``settings`` into the ``validate:`` section of the (copied) release's recipe.yaml."""
    path = release / "recipe.yaml"
    doc = yaml.safe_load(path.read_text()) or {}
    doc["validate"] = (doc.get("validate") or {}) | settings
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def value(release: Path, folds: int) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "curate.cli", "value", str(release), "--folds", str(folds)], check=True,
                   env=os.environ | {"PYTHONPATH": str(REPO)})
    rel = duckdb.sql(f"SELECT * FROM '{release / 'value' / 'clip_value.parquet'}' WHERE status = 'ok'")
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r)) for r in rel.fetchall()], time.perf_counter() - t0


def scores(rows: list[dict], bad: set[str]) -> dict[str, dict]:
    out = {}
    rules = {flag: (lambda r, f=flag: r[f]) for flag in FLAGS}
    rules["either flag"] = lambda r: r["frames_do_not_help"] or r["unlearnable"]
    # For comparison: the protocol's visual gain (a blind model's loss minus the aligned model's),
    # whose per-clip interval carries the noise of two separately trained models.
    rules["visual_gain interval <= 0"] = lambda r: r["visual_gain_low"] <= 0
    for flag, rule in rules.items():
        hit = {r["clip_id"] for r in rows if rule(r)}
        tp = len(hit & bad)
        out[flag] = {"flagged": len(hit), "true": tp, "precision": tp / len(hit) if hit else float("nan"),
                     "recall": tp / len(bad) if bad else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/curate-value-bench"))
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    ap.add_argument("--steps", type=int, help="training steps per (fold, condition); default: the backbone's")
    ap.add_argument("--seed", type=int, default=0, help="which clips are corrupted")
    ap.add_argument("--no-clean", action="store_true", help="skip scoring the clean release (false alarms)")
    args = ap.parse_args()

    settings = BACKBONES[args.backbone] | ({"steps": args.steps} if args.steps else {})
    release = demo_release(args.workdir.resolve())
    control = release.with_name(f"{release.name}-swapped-{int(args.fraction * 100)}-{args.backbone}")
    bad = set(swap_words_copy(release, control, args.fraction, args.seed))
    (control / "corrupted.json").write_text(json.dumps(sorted(bad), indent=1))
    set_validate(control, settings)
    rows, seconds = value(control, args.folds)
    print(f"\ncontrol release {control.name}: {len(rows)} clips valued, {len(bad)} corrupted "
          f"({args.fraction:.0%}, words of another video's clip; ids in {control / 'corrupted.json'}); "
          f"backbone {args.backbone}, {args.folds} folds x 3 conditions x {settings['steps']} steps, {seconds:.0f} s; "
          f"load {os.getloadavg()[0]:.1f}")
    res = scores(rows, bad)
    print(f"{'flag':<26} {'flagged':>7} {'corrupt':>7} {'precision':>9} {'recall':>7}  goal {GOAL} both")
    for flag, s in res.items():
        ok = s["precision"] >= GOAL and s["recall"] >= GOAL
        print(f"{flag:<26} {s['flagged']:>7} {s['true']:>7} {s['precision']:>9.2f} {s['recall']:>7.2f}  "
              f"{'met' if ok else 'not met'}")
    for col in ("frame_gain", "visual_gain"):
        gains = sorted(((r[col], r["clip_id"] in bad) for r in rows))
        print(f"{col}, corrupted clips:", " ".join(f"{g:+.2f}" for g, b in gains if b))
        print(f"{col}, clean clips:    ", " ".join(f"{g:+.2f}" for g, b in gains if not b))
    if not args.no_clean:
        copy = release.with_name(f"{release.name}-clean-{args.backbone}")
        swap_words_copy(release, copy, 0.0)
        set_validate(copy, settings)
        clean, seconds = value(copy, args.folds)
        flagged = {f: sum(bool(r[f]) for r in clean) for f in FLAGS}
        print(f"\nclean release {release.name} (copy {copy.name}): {len(clean)} clips, {seconds:.0f} s; flagged: "
              + ", ".join(f"{f} {n} ({n / max(len(clean), 1):.0%})" for f, n in flagged.items()))


if __name__ == "__main__":
    main()
