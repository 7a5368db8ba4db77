"""Negative controls built from any release (``curate validate --controls``).

A control is the release's own clips with the link between frames and words
cut, so whatever gain the reference model finds on it is what the protocol
finds where there is nothing to find:

- ``frames``: each clip's visual tokens are those of a random clip of another
  video in the same split (repeated or cut to the clip's seconds);
- ``words``: each clip's words are those of a random clip of another video in
  the same split, moved into the clip's time (words that would end after it
  are dropped).

Everything else (model, steps, seeds, splits, bootstrap) is the real run's.
The real release's gain "sits above" a control's when the real gain's 95%
interval lies wholly above the control's (its lower bound over the control's
upper bound). A positive control needs a generator whose truth is known (the
demo corpus, docs/refmodel.md); it cannot be made from any release.
"""

from __future__ import annotations

import random

import numpy as np

CONTROLS = ("frames", "words")


def apply(clips: list, control: str, seed: int) -> int:
    """Cut frames from words in ``clips`` (``rdata.Clip``, in place) as ``control`` says;
    returns how many clips had no clip of another video in their split to take from."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; known: {', '.join(CONTROLS)}")
    rng = random.Random(f"{control}:{seed}")
    originals = [(c.split, c.video_id, c.start_s, c.vis, list(c.words)) for c in clips]
    alone = 0
    for clip in clips:
        donors = [o for o in originals if o[0] == clip.split and o[1] != clip.video_id]
        if not donors:
            alone += 1
            continue
        _, _, start, vis, words = rng.choice(donors)
        if control == "frames":
            n = len(clip.vis) if clip.vis is not None else len(vis)
            clip.vis = np.asarray(vis)[np.arange(n) % max(len(vis), 1)]
        else:
            shift = clip.start_s - start
            clip.words = [dict(w, start_s=w["start_s"] + shift, end_s=w["end_s"] + shift) for w in words
                          if w["end_s"] + shift <= clip.end_s]
    return alone


def compare(doc: dict, controls: dict[str, dict]) -> dict:
    """Per control: its losses, gains (with per-seed figures) and, per gain, whether the real
    release's gain sits above the control's."""
    out = {}
    for name, c in controls.items():
        above = {}
        for gain, real in doc["gains"].items():
            ctl = c["gains"].get(gain)
            if ctl is not None:
                above[gain] = bool(real["ci95"][0] > ctl["ci95"][1])
        out[name] = {"loss_per_word": c["loss_per_word"], "gains": c["gains"], "real_above": above,
                     "eval_clips": c["data"]["eval_clips"], "notes": c.get("notes", [])}
    return out


def swap_words_copy(release, out, fraction: float, seed: int = 0) -> list[str]:
    """A copy of the release folder at ``out`` in which ``fraction`` of the clips (chosen by
    ``seed``) carry the words of a clip of another video, moved into their own time (words that
    would end after the clip are dropped); returns the corrupted clip ids. The copy sits beside the
    release (the same catalog), so its frames are still each clip's own: only the pairing breaks.
    For benches and tests of the per-clip value flags."""
    import shutil
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    release, out = Path(release), Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(release, out, ignore=shutil.ignore_patterns("validation", "value"))
    files = sorted((out / "data" / "clips").glob("*.parquet"))
    tables = {f: pq.read_table(f).to_pylist() for f in files}
    rows = [(f, i, r) for f, t in tables.items() for i, r in enumerate(t)]
    rng = random.Random(f"swap:{seed}")
    with_words = [x for x in rows if x[2]["words"]]
    chosen = rng.sample(with_words, round(fraction * len(with_words)))
    for f, i, r in chosen:
        donor = rng.choice([d for _, _, d in with_words if d["video_id"] != r["video_id"]])
        shift = r["start_s"] - donor["start_s"]
        words = [dict(w, start_s=w["start_s"] + shift, end_s=w["end_s"] + shift) for w in donor["words"]
                 if w["end_s"] + shift <= r["end_s"]]
        tables[f][i] = dict(r, words=words, text=" ".join(w["text"] for w in words), n_words=len(words))
    for f, t in tables.items():
        pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(f)), f)
    return sorted(r["clip_id"] for _, _, r in chosen)
