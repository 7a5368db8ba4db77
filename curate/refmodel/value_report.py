"""``<release>/value/``: clip_value.parquet, value.json, one plot, a short card and a manifest
(`curate verify` checks them against it)."""

from __future__ import annotations

import os
from pathlib import Path

from ..catalog.files import atomic_write_json, sha256_file
from .value import COLUMNS, TABLE


def _schema():
    import pyarrow as pa

    f, s, i, b = pa.float64(), pa.string(), pa.int32(), pa.bool_()
    types = {"clip_id": s, "video_id": s, "split": s, "fold": i, "status": s, "words": i,
             "frames_do_not_help": b, "unlearnable": b}
    return pa.schema([(c, types.get(c, f)) for c in COLUMNS])


def write_table(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=_schema()), tmp)
    os.replace(tmp, path)


def plot(doc: dict, path: Path) -> bool:
    """Frame gain (with its interval) against the aligned loss per word, flagged clips marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in doc["clips"] if r["status"] == "ok"]
    if not ok:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100)
    for flagged, colour, label in ((False, "tab:blue", "frames help (interval above 0)"),
                                   (True, "tab:red", "frames do not help (interval holds or is below 0)")):
        rs = [r for r in ok if r["frames_do_not_help"] == flagged]
        if not rs:
            continue
        x = np.array([r["loss_aligned"] for r in rs])
        y = np.array([r["frame_gain"] for r in rs])
        err = np.array([[r["frame_gain"] - r["frame_gain_low"] for r in rs],
                        [r["frame_gain_high"] - r["frame_gain"] for r in rs]])
        ax.errorbar(x, y, yerr=err, fmt="o", ms=3, lw=0.6, alpha=0.7, color=colour, label=label)
    fence = doc["fence"]["loss_per_word"]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(fence, color="tab:orange", lw=1, ls="--", label=f"unlearnable beyond {fence:.2f} (fence)")
    ax.set_xlabel("loss per word, frames aligned (nats)")
    ax.set_ylabel("frame gain: other videos' frames - own (nats/word)", fontsize=8)
    ax.set_title(f"per-clip value of {doc.get('release_version', 'the release')} ({len(ok)} clips, "
                 f"{doc['folds']} folds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _seeds(model: dict) -> str:
    seeds = model.get("seeds") or [model["seed"]]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}, their mean"


def card(doc: dict, plots: list[str]) -> str:
    c, f, m = doc["counts"], doc["fence"], doc["model"]
    worst = sorted((r for r in doc["clips"] if r["status"] == "ok"), key=lambda r: r["frame_gain"])[:10]
    lines = [f"# What each clip is worth ({doc.get('release_version', '')})", "",
             f"`curate value` scored each of the {c['valued']} clips with words by reference models (backbone "
             f"`{m['backbone']}`, {m['steps']} steps, {_seeds(m)}) that never trained on its video: the "
             f"release's videos were dealt into {doc['folds']} folds, and each fold's clips were scored by the "
             "three conditions (frames aligned, shuffled, none) trained on the other folds, and by the aligned "
             f"model with the frames of {doc.get('donors', '')} clips of other videos in place of their own.", "",
             f"- **{c['frames_do_not_help']}** clip(s) flagged `frames_do_not_help`: the 95% interval of their "
             "frame gain (loss with other videos' frames minus loss with their own, those clips resampled) is "
             "below zero or holds it.",
             f"- **{c['unlearnable']}** clip(s) flagged `unlearnable`: aligned loss per word above "
             f"{f['loss_per_word']:.3f} nats, the far-out fence Q3 + {f['iqr_multiple']:g} x IQR "
             f"(Q1 {f['q1']:.3f}, Q3 {f['q3']:.3f}).",
             *([f"- {c['no_words']} clip(s) have no words and no value."] if c["no_words"] else []), "",
             "The table also holds each clip's loss per word in the three conditions and the protocol's visual and "
             "temporal gains, with bootstrap intervals over its words. Leave clips out of the next release with "
             "`release.value` (`min_visual_gain`, `max_loss_percentile`, `drop_flagged`); `curate sql` shows the "
             "table as `clip_value`.", ""]
    if worst:
        lines += ["Lowest frame gains:", "",
                  "| clip | split | words | frame gain (95% CI) | visual gain (95% CI) | loss per word | flags |",
                  "|---|---|---|---|---|---|---|",
                  *[f"| `{r['clip_id']}` | {r['split']} | {r['words']} | {r['frame_gain']:+.3f} "
                    f"({r['frame_gain_low']:+.3f} to {r['frame_gain_high']:+.3f}) | {r['visual_gain']:+.3f} "
                    f"({r['visual_gain_low']:+.3f} to {r['visual_gain_high']:+.3f}) | {r['loss_aligned']:.3f} | "
                    + ", ".join(k for k in ("frames_do_not_help", "unlearnable") if r[k]) + " |" for r in worst], ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", f"Details: `value.json` ({m.get('device')}, {doc['seconds']:.0f} s); every file here is listed "
              "with its sha256 in `manifest.json`.", ""]
    return "\n".join(lines)


def write(doc: dict, out: Path) -> None:
    """Every file of the value folder, the manifest last (a folder without one is not finished)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    write_table(doc["clips"], out / TABLE)
    plots = ["plots/value.png"] if plot(doc, out / "plots" / "value.png") else []
    atomic_write_json(out / "value.json", {k: v for k, v in doc.items() if k != "clips"} | {"plots": plots})
    (out / "README.md").write_text(card(doc, plots))
    files = [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(out.rglob("*")) if p.is_file() and "_work" not in p.relative_to(out).parts
             and p.name != "manifest.json"]
    atomic_write_json(out / "manifest.json", {"release": doc.get("release_version"), "files": files})
