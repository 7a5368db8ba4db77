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
