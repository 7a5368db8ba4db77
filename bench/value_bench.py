"""Do the per-clip value flags find the clips known to be bad?

A control release: the 24-video demo release (`curate demo --videos 24`, built once
in --workdir), copied with a known fraction of its clips corrupted. The chosen clips of
each value fold trade their words among themselves (each takes those of a chosen clip of
another video of its fold, moved into its time; ids and sources in corrupted.json):

- within a fold, so no model that scores a corrupted clip has trained on its words (a
  clip's words taken from any other clip, left clean in the release, were memorised by
  the models of the other folds: docs/refmodel.md);
- with ``--matches looks`` (the default), no traded word names a colour or shape that the
  clip's frames have shown the model by then (to the end of the word's second: each second's
  frame comes before its words), or one that looks like it to the demo CLIP (blue for
  purple, a star for a diamond; the bench prints which look alike); ``names`` leaves out
  only the exact names, ``allow`` nothing. The generator's truth files say what is shown.

`curate value` scores the copy; the bench prints, per flag, how many corrupted clips it
recovers (recall) and how many of the clips it flags are corrupted (precision), against
the goal of 0.8 for both, and the same flags on the clean release (false alarms).
``--draws`` (default 3) makes that many control releases, corruption seeds --seed,
--seed + 1, ..., and pools their counts: one draw corrupts only 11 clips, and which 11
changes with every build of the demo (a video's id hashes its URL, whose loopback port is
new each time, and the folds are dealt by id), so one draw's figures move by 0.2 or more.

    .venv/bin/python bench/value_bench.py                 # 3 draws x 20% corrupted, 5 folds, tiny, 3 seeds (~40 min)
    .venv/bin/python bench/value_bench.py --fraction 0.2 --folds 5 --steps 300 --seeds 3 --seed 0 --draws 1 --no-clean
    .venv/bin/python bench/value_bench.py --matches allow  # any trade within a fold
    .venv/bin/python bench/value_bench.py --backbone smollm2-135m   # the bundled SmolLM2, frozen: 60 steps x 2, lr 0.03

Both copies (corrupted and clean) are the bench's own: it writes the backbone's settings into
their recipe.yaml's ``validate:`` section, which `curate value RELEASE` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.demo.corpus import COLORS, DEMO_DATA, SHAPE_TRAITS  # noqa: E402
from curate.recipe import ValidateConfig  # noqa: E402
from curate.refmodel.controls import swap_words_copy  # noqa: E402
from curate.refmodel.value import assign_folds  # noqa: E402

FLAGS = ("frames_do_not_help", "unlearnable")
MATCHES = {"looks": "trades naming what the frames show or what looks like it", "names": "trades naming what the "
           "frames show", "allow": "none"}
GOAL = 0.8
# Per backbone, the validate settings the bench trains with (docs/refmodel.md: SmolLM2's are the
# recommended 2-core settings measured there).
BACKBONES = {
    "tiny": {"steps": 300, "value_seeds": 3},
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


def value_folds(release: Path, folds: int, settings: dict) -> dict[str, int]:
    """Each video's fold as `curate value` will deal them (the videos with words; validate.seed)."""
    recipe = yaml.safe_load((release / "recipe.yaml").read_text()) or {}
    seed = ValidateConfig.model_validate((recipe.get("validate") or {}) | settings).seed
    videos = [v for (v,) in duckdb.sql(f"SELECT DISTINCT video_id FROM '{release / 'data' / 'clips'}/*.parquet' "
                                       "WHERE len(words) > 0").fetchall()]
    return assign_folds(videos, folds, seed)


def demo_scenes(workdir: Path) -> dict[str, list[dict]]:
    """Each demo video's scenes (video seconds, colour, shape) from the generator's truth files."""
    files = [*DEMO_DATA.glob("*.truth.json"), *(workdir / "catalogs" / "demo-24" / "videos").glob("*.truth.json")]
    return {f.name.split(".")[0]: json.loads(f.read_text())["scenes"] for f in files}


LOOK_ALIKE = 0.3  # mean cosine of two colours' (or shapes') scenes to the demo CLIP at which they look alike


def look_alikes(threshold: float = LOOK_ALIKE) -> dict[str, set[str]]:
    """Each colour and shape, with those whose scenes look like its own to the demo CLIP (the mean
    cosine between their scenes' embeddings, every other attribute varied, at least ``threshold``;
    scenes of one colour score 0.5-0.7 here, of two colours -0.2 to 0.4): blue for purple, a star
    for a diamond. Trades that name one of those are left out with ``--matches looks``."""
    import numpy as np

    from curate.demo.corpus import BACKGROUNDS, render_scene
    from curate.vision.clip_encoder import DEMO_MODEL, ClipEncoder

    grid = [(c, s) for c in sorted(COLORS) for s in sorted(SHAPE_TRAITS)]
    frames = [np.asarray(render_scene(s, c, "apples", BACKGROUNDS[0]))[:, :, ::-1].copy() for c, s in grid]
    emb = ClipEncoder(DEMO_MODEL, None).encode_frames(frames)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    out: dict[str, set[str]] = {}
    for axis, names in ((0, sorted(COLORS)), (1, sorted(SHAPE_TRAITS))):
        other = [g[1 - axis] for g in grid]
        for a in names:
            out[a] = {a}
            for b in names:
                pairs = [sim[i, j] for i, x in enumerate(grid) for j, y in enumerate(grid)
                         if x[axis] == a and y[axis] == b and other[i] != other[j]]
                if b != a and float(np.mean(pairs)) >= threshold:
                    out[a].add(b)
    return out


def seen_until(clip: dict, end_s: float) -> float:
    """The video time up to which the reference model has seen the clip's frames when it reads a word
    ending at ``end_s``: the end of that word's second. The stream puts each second's frame (the mean
    of the frames sampled in it) before the words ending in that second (refmodel.data.stream), so a
    word can see a scene that starts after it, within its second."""
    full = max(1, math.ceil(clip["end_s"] - clip["start_s"] - 1e-6))
    k = min(max(0, math.floor(end_s - clip["start_s"])), full - 1)
    return clip["start_s"] + k + 1


def names_nothing_on_screen(scenes: dict[str, list[dict]], alike: dict[str, set[str]] | None = None):
    """``allowed`` for swap_words_copy: the source's words, moved into the clip's time, name no colour
    or shape that the clip's frames have shown the model by the time it reads the word (seen_until),
    nor (with ``alike``) one that looks like it (else the trade leaves words its frames do bear on:
    with 8 colours and 6 shapes, chance matches are common)."""
    alike = alike or {}

    def allowed(clip: dict, source: dict) -> bool:
        shown = scenes[re.search(r"demo_\d+", clip["video_id"]).group(0)]
        shift = clip["start_s"] - source["start_s"]
        for w in source["words"]:
            end, word = w["end_s"] + shift, w["text"].strip(".,!?").lower()
            if end <= clip["end_s"] and (word in COLORS or word in SHAPE_TRAITS):
                seen, until = alike.get(word, {word}), seen_until(clip, end)
                if any(sc["start"] < until and sc["end"] > clip["start_s"] and seen & {sc["color"], sc["shape"]}
                       for sc in shown):
                    return False
        return True
    return allowed


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


def print_scores(res: dict[str, dict]) -> None:
    print(f"{'flag':<26} {'flagged':>7} {'corrupt':>7} {'precision':>9} {'recall':>7}  goal {GOAL} both")
    for flag, s in res.items():
        ok = s["precision"] >= GOAL and s["recall"] >= GOAL
        print(f"{flag:<26} {s['flagged']:>7} {s['true']:>7} {s['precision']:>9.2f} {s['recall']:>7.2f}  "
              f"{'met' if ok else 'not met'}")


def draw(release: Path, args, settings: dict, folds: dict, allowed, seed: int) -> dict[str, dict]:
    """One control release (corruption ``seed``) valued and scored: each flag's counts."""
    control = release.with_name(f"{release.name}-swapped-{int(args.fraction * 100)}-{args.backbone}-seed{seed}")
    sources = swap_words_copy(release, control, args.fraction, seed, groups=folds, allowed=allowed)
    bad = set(sources)
    (control / "corrupted.json").write_text(json.dumps(sources, indent=1))
    set_validate(control, settings)
    rows, seconds = value(control, args.folds)
    dealt = json.loads((control / "value" / "value.json").read_text())["video_fold"]
    video = {r["clip_id"]: r["video_id"] for r in rows}
    if any(dealt[video[c]] != dealt[video[s]] for c, s in sources.items() if c in video and s in video):
        sys.exit("value dealt the videos into other folds than the bench traded words in: the control leaks")
    print(f"\ncontrol release {control.name}: {len(rows)} clips valued, {len(bad)} corrupted "
          f"({args.fraction:.0%}, corruption seed {seed}, words traded among clips of other videos of the same fold, "
          f"left out: {MATCHES[args.matches]}; ids and sources in {control / 'corrupted.json'}); "
          f"backbone {args.backbone}, {args.folds} folds x 3 conditions x {settings.get('value_seeds', 1)} seeds x "
          f"{settings['steps']} steps, {settings.get('value_donors', ValidateConfig().value_donors)} donors, "
          f"{seconds:.0f} s; load {os.getloadavg()[0]:.1f}")
    res = scores(rows, bad)
    print_scores(res)
    for col in ("frame_gain", "visual_gain"):
        gains = sorted(((r[col], r["clip_id"] in bad) for r in rows))
        print(f"{col}, corrupted clips:", " ".join(f"{g:+.2f}" for g, b in gains if b))
        print(f"{col}, clean clips:    ", " ".join(f"{g:+.2f}" for g, b in gains if not b))
    return {flag: r | {"bad": len(bad)} for flag, r in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/curate-value-bench"))
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    ap.add_argument("--steps", type=int, help="training steps per (fold, condition); default: the backbone's")
    ap.add_argument("--seeds", type=int, help="training seeds per fold (validate.value_seeds); default: the backbone's")
    ap.add_argument("--donors", type=int, help="clips whose frames each clip's words are also scored under "
                                                 "(validate.value_donors)")
    ap.add_argument("--seed", type=int, default=0, help="which clips are corrupted (the first draw's)")
    ap.add_argument("--draws", type=int, default=3, help="control releases, corruption seeds --seed, --seed + 1, ...: "
                                                         "each scored, then all pooled")
    ap.add_argument("--matches", choices=sorted(MATCHES), default="looks",
                    help="which trades are left out: words naming a colour or shape the clip's frames show or one "
                         "that looks like it to the demo CLIP (looks), only those shown (names), none (allow)")
    ap.add_argument("--no-clean", action="store_true", help="skip scoring the clean release (false alarms)")
    args = ap.parse_args()

    given = {"steps": args.steps, "value_seeds": args.seeds, "value_donors": args.donors}
    settings = BACKBONES[args.backbone] | {k: v for k, v in given.items() if v}
    release = demo_release(args.workdir.resolve())
    folds = value_folds(release, args.folds, settings)
    allowed = None
    if args.matches != "allow":
        alike = look_alikes() if args.matches == "looks" else None
        if alike:
            print("look alike to the demo CLIP:", "; ".join(f"{a}: {', '.join(sorted(b - {a}))}"
                                                          for a, b in alike.items() if len(b) > 1))
        allowed = names_nothing_on_screen(demo_scenes(args.workdir.resolve()), alike)
    pooled: dict[str, dict] = {}
    for seed in range(args.seed, args.seed + args.draws):
        res = draw(release, args, settings, folds, allowed, seed)
        for flag, s in res.items():
            total = pooled.setdefault(flag, {"flagged": 0, "true": 0, "bad": 0})
            total["flagged"] += s["flagged"]
            total["true"] += s["true"]
            total["bad"] += s["bad"]
    if args.draws > 1:
        print(f"\npooled over {args.draws} draws (corruption seeds {args.seed}-{args.seed + args.draws - 1}): "
              "the clips flagged and corrupted of every draw counted together")
        print_scores({f: t | {"precision": t["true"] / t["flagged"] if t["flagged"] else float("nan"),
                              "recall": t["true"] / t["bad"] if t["bad"] else float("nan")} for f, t in pooled.items()})
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
