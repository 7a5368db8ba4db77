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


def swap_words_copy(release, out, fraction: float, seed: int = 0, groups: dict | None = None,
                    allowed=None) -> dict[str, str]:
    """A copy of the release folder at ``out`` in which ``fraction`` of the clips (chosen by
    ``seed``) carry the words of a clip of another video, moved into their own time (words that
    would end after the clip are dropped); returns ``{corrupted clip id: the clip its words came
    from}``. The copy sits beside the release (the same catalog), so its frames are still each
    clip's own: only the pairing breaks. For benches and tests of the per-clip value flags.

    ``groups`` (video id -> group, e.g. `curate value`'s folds) keeps every swap inside a group:
    the chosen clips of a group trade words among themselves, so no model that is kept from a
    group's videos has seen a corrupted clip's words. Without it a clip's words come from any
    other video's clip, which stays in the release uncorrupted: a model cross-fitted on the
    release has then trained on those very words (docs/refmodel.md). ``allowed(clip row, source
    row)`` (with ``groups``) says whether the source's words may go onto the clip: a bench that knows
    what the frames show keeps a trade from naming it by chance."""
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
    n = round(fraction * len(with_words))
    if groups is None:
        chosen = rng.sample(with_words, n)
        sources = [rng.choice([d for d in with_words if d[2]["video_id"] != x[2]["video_id"]]) for x in chosen]
    else:
        chosen, sources = _trades_within_groups(with_words, n, groups, rng, allowed)
    for (f, i, r), (_, _, donor) in zip(chosen, sources):
        shift = r["start_s"] - donor["start_s"]
        words = [dict(w, start_s=w["start_s"] + shift, end_s=w["end_s"] + shift) for w in donor["words"]
                 if w["end_s"] + shift <= r["end_s"]]
        tables[f][i] = dict(r, words=words, text=" ".join(w["text"] for w in words), n_words=len(words))
    for f, t in tables.items():
        pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(f)), f)
    return dict(sorted((r["clip_id"], d["clip_id"]) for (_, _, r), (_, _, d) in zip(chosen, sources)))


def _trades_within_groups(rows: list, n: int, groups: dict, rng: random.Random, allowed=None) -> tuple[list, list]:
    """``n`` of ``rows`` (about the same share of each group, never a lone one) and, for each, the
    row of the same group and another video whose words it takes: the chosen rows of a group trade
    their words among themselves (a derangement), so every words' source is itself corrupted."""
    by_group: dict = {}
    for x in rows:
        by_group.setdefault(groups[x[2]["video_id"]], []).append(x)
    tradable = {g: xs for g, xs in sorted(by_group.items()) if len({x[2]["video_id"] for x in xs}) >= 2}
    total = sum(len(xs) for xs in tradable.values())
    if n and (n < 2 or total < n):
        raise ValueError(f"cannot trade the words of {n} clips within groups ({total} clips in groups of 2+ videos)")
    # Largest remainder share of n per group, then no group left with one clip to trade.
    share = {g: n * len(xs) / max(total, 1) for g, xs in tradable.items()}
    quota = {g: int(s) for g, s in share.items()}
    for g in sorted(share, key=lambda g: quota[g] - share[g])[: n - sum(quota.values())]:
        quota[g] += 1
    for _ in range(len(quota) ** 2):
        lone = [g for g, q in quota.items() if q == 1]
        if not lone:
            break
        room = [h for h in quota if h != lone[0] and quota[h] < len(tradable[h])]
        if not room:
            break
        quota[lone[0]] = 0
        quota[max(room, key=lambda h: (quota[h], len(tradable[h])))] += 1
    chosen, sources = [], []
    for g, q in quota.items():
        if q == 0:
            continue
        for _ in range(1 if allowed is None else 5000):  # rejection, only when ``allowed`` rules trades out
            pick, source = _trade(tradable[g], q, rng, shuffle=allowed is not None)
            if source is not None and (allowed is None or all(allowed(a[2], b[2]) for a, b in zip(pick, source))):
                break
        else:
            why = "too few videos in it" if allowed is None else "none that `allowed` accepts"
            raise ValueError(f"cannot trade the words of {q} clips of group {g}: {why}")
        chosen += pick
        sources += source
    return chosen, sources


def _trade(rows: list, q: int, rng: random.Random, shuffle: bool) -> tuple[list, list | None]:
    """``q`` of ``rows`` and the row each takes its words from (another video's; None when the
    videos drawn cannot all trade). Round robin over the videos (in random order), so no video
    holds over half; then, sorted by video, each takes the words of the row ``most`` places on
    (always another video), or with ``shuffle`` a random derangement across videos."""
    queues: dict = {}
    for x in rng.sample(rows, len(rows)):
        queues.setdefault(x[2]["video_id"], []).append(x)
    pick: list = []
    while len(pick) < q:
        pick += [qu.pop() for qu in queues.values() if qu][: q - len(pick)]
    pick.sort(key=lambda x: x[2]["video_id"])
    most = max(sum(x[2]["video_id"] == v for x in pick) for v in queues)
    if 2 * most > q:
        return pick, None
    if shuffle:
        order = rng.sample(range(q), q)
        if any(pick[i][2]["video_id"] == pick[j][2]["video_id"] for i, j in enumerate(order)):
            return pick, None
        return pick, [pick[j] for j in order]
    return pick, [pick[(i + most) % q] for i in range(q)]
