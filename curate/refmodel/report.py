"""``validation/<run>/``: validation.json, the loss curves, and the validation's own
card ("Does this data teach?", a plain reading of the numbers), with a manifest.
The release beside it is never edited: its card says where validations go, and
``validation/latest.json`` names the newest."""

from __future__ import annotations

from pathlib import Path

from ..catalog.files import atomic_write_json, sha256_file

def loss_plots(doc: dict, out: Path) -> list[str]:
    """plots/loss_<condition>.png: training loss per step (and a running mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    made = []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    per_seed = doc.get("per_seed") or []
    for cond, hist in doc["history"].items():
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        for run in per_seed if len(per_seed) > 1 else []:
            ax.plot(np.arange(1, len(run["history"][cond]) + 1), run["history"][cond], lw=0.5, alpha=0.3)
        y = np.asarray(hist)
        ax.plot(np.arange(1, len(y) + 1), y, lw=0.8, alpha=0.5,
                label="step" if len(per_seed) <= 1 else f"step, mean of {len(per_seed)} seeds")
        k = max(1, len(y) // 20)
        if len(y) >= k:
            ax.plot(np.arange(k, len(y) + 1), np.convolve(y, np.ones(k) / k, mode="valid"), lw=1.6,
                    label=f"mean of {k}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss per word token (nats)")
        ax.set_title(f"training loss, condition '{cond}' (final scored loss per word "
                     f"{doc['loss_per_word'][cond]:.3f})", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        rel = f"plots/loss_{cond}.png"
        fig.savefig(out / rel)
        plt.close(fig)
        made.append(rel)
    return made


def _ci(g: dict) -> str:
    lo, hi = g["ci95"]
    return f"95% CI {lo:.2f} to {hi:.2f}"


def evidence_line(doc: dict) -> str:
    e = doc.get("evidence")
    if not e:
        return ""
    return (f"Held out ({doc['data']['eval_split']} split): {e['eval_clips']} clips from {e['eval_videos']} videos, "
            f"{e['eval_words']} words.")


def reading(doc: dict) -> list[str]:
    """One plain sentence per gain, and one for QA; none below the minimum of held-out data,
    only the sentence that says so. Overfitting is said either way."""
    overfit = [n[0].upper() + n[1:] + "." for n in doc.get("notes", []) if n.startswith("overfitting")]
    if doc.get("verdict") is False:
        e = doc["evidence"]
        return [f"Not enough held-out data to tell: {e['eval_clips']} clip(s) from {e['eval_videos']} video(s), "
                f"{e['eval_words']} words; a verdict needs at least {e['min_videos']} videos and {e['min_words']} "
                "words held out. The figures below are reported, not read."] + overfit
    out = []
    g = doc["gains"].get("visual")
    if g:
        lo, hi = g["ci95"]
        v = g["nats_per_word"]
        if lo > 0:
            out.append(f"Frames lower the loss per word by {v:.2f} nats ({_ci(g)}): the pictures tell the model "
                       "something about the words spoken.")
        elif hi < 0:
            out.append(f"Frames raise the loss per word by {-v:.2f} nats (visual gain {_ci(g)}): the model does "
                       "worse with the pictures than without; the words do not follow what is shown (mismatched "
                       "clips?).")
        else:
            out.append(f"No evidence that frames help: the visual gain (loss without frames minus with them) is "
                       f"{v:+.2f} nats per word ({_ci(g)}, which includes zero).")
    g = doc["gains"].get("temporal")
    if g:
        lo, hi = g["ci95"]
        v = g["nats_per_word"]
        if lo > 0:
            out.append(f"Frames at their own time beat the same frames shuffled within the clip by {v:.2f} nats "
                       f"per word ({_ci(g)}): the words follow the pictures in time.")
        else:
            out.append(f"No evidence that timing matters: the temporal-alignment gain (shuffled frames minus "
                       f"aligned) is {v:+.2f} nats per word ({_ci(g)}).")
    qa = doc.get("qa")
    if qa:
        a = qa["by_condition"].get("aligned") or next(iter(qa["by_condition"].values()))
        lo, hi = a["ci95"]
        where = "above" if lo > qa["chance"] else ("below" if hi < qa["chance"] else "not distinguishable from")
        out.append(f"Multiple-choice QA by option likelihood: {a['accuracy']:.0%} of {qa['questions']} questions "
                   f"(95% CI {lo:.0%} to {hi:.0%}), {where} chance ({qa['chance']:.0%}).")
    return out + overfit + control_lines(doc)


CONTROL_WHAT = {"frames": "each clip's frames taken from a clip of another video",
                "words": "each clip's words taken from a clip of another video"}


def control_lines(doc: dict) -> list[str]:
    """One sentence per negative control (``--controls``): its gains, and whether the release's sit above."""
    out = []
    for name, c in (doc.get("controls") or {}).items():
        parts = []
        for gain, g in c["gains"].items():
            above = c["real_above"].get(gain)
            parts.append(f"{gain} gain {g['nats_per_word']:+.2f} ({_ci(g)}); the release's {gain} gain "
                         + ("sits above it" if above else "does not sit above it"))
        out.append(f"Negative control '{name}' ({CONTROL_WHAT.get(name, name)}): " + "; ".join(parts) + ".")
    return out


def card_section(doc: dict, plots: list[str], title: str = "Does this data teach?") -> str:
    """The validation's own card (README.md beside its validation.json): what was trained, on
    what evidence, the plain reading, the figures."""
    loss, m, t = doc["loss_per_word"], doc["model"], doc["training"]
    seeds = t.get("seeds") or [t.get("seed", 0)]
    clusters = (doc.get("interval") or {}).get("clusters", doc.get("evidence", {}).get("eval_videos"))
    lines = [f"# {title}", "",
             f"`curate validate` trained a reference streaming video-LLM (backbone `{m['backbone']}`, "
             f"{m['params']:,} parameters, {m['trainable_params']:,} trained) for {t['steps']} steps in three "
             f"conditions: with the frames aligned, with the frames shuffled in time within each clip, and with "
             f"no frames (a learned constant instead); each condition with {len(seeds)} seed(s) "
             f"({', '.join(map(str, seeds))}; the three conditions of a seed start from the same weights). Each "
             f"model was scored on the same {doc['data']['eval_clips']} clips ({doc['data']['eval_words']} words) "
             f"of the `{doc['data']['eval_split']}` split; figures are means over the seeds, and intervals are "
             f"paired bootstrap 95% intervals that resample the {clusters} held-out videos (a video's clips "
             f"together) and the seeds, so they cover which videos were held out and training noise.",
             "", evidence_line(doc), "", *[f"- {s}" for s in reading(doc)], "",
             "| condition | loss per word (nats) | training loss per token | held-out loss per token |",
             "|---|---|---|---|",
             *[f"| {k} | {v:.3f} | {doc['fit'][k]['train_per_token']:.3f} | {doc['fit'][k]['eval_per_token']:.3f} |"
               if k in doc.get("fit", {}) else f"| {k} | {v:.3f} | | |" for k, v in loss.items()], "",
             "| gain | nats per word | 95% CI |", "|---|---|---|",
             *[f"| {name} ({g['minus']} - aligned) | {g['nats_per_word']:.3f} | {g['ci95'][0]:.3f} to "
               f"{g['ci95'][1]:.3f} |" for name, g in doc["gains"].items()], ""]
    lines += value_filter_lines(doc)
    if doc.get("per_seed"):
        names = list(doc["gains"])
        lines += ["Per seed:", "", "| seed | " + " | ".join(f"loss {k}" for k in loss) + " | "
                  + " | ".join(f"{n} gain" for n in names) + " |", "|---|" + "---|" * (len(loss) + len(names)),
                  *[f"| {r['seed']} | " + " | ".join(f"{r['loss_per_word'][k]:.3f}" for k in loss) + " | "
                    + " | ".join(f"{doc['gains'][n]['per_seed'][j]:.3f}" for n in names) + " |"
                    for j, r in enumerate(doc["per_seed"])], ""]
    notes = [n for n in doc.get("notes", []) if not n.startswith(("overfitting", "not enough"))]
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", f"Details: `validation.json` ({doc['hardware'].get('device')}, {doc['seconds']:.0f} s); "
              "every file here is listed with its sha256 in `manifest.json`.", ""]
    return "\n".join(lines)


def value_filter_lines(doc: dict) -> list[str]:
    """A release built by ``release.value``: its gains beside those of the release it was filtered from."""
    vf = doc.get("value_filter")
    if not vf:
        return []
    name, mine = vf["release"], doc.get("release_version", "this release")
    head = (f"This release is {name} less {vf['removed']} clip(s) of split(s) {', '.join(vf['splits'])} by their "
            f"per-clip value (`release.value`).")
    before = vf.get("validation")
    if not before:
        return [head + f" {name} has no validation to compare with (`curate validate` it).", ""]

    def fig(g: dict | None) -> str:
        if not g or g.get("nats_per_word") is None:
            return "–"
        lo, hi = g.get("ci95") or (None, None)
        return f"{g['nats_per_word']:.3f} ({lo:.3f} to {hi:.3f})" if lo is not None else f"{g['nats_per_word']:.3f}"

    kinds = list(dict.fromkeys([*doc["gains"], *before["gains"]]))
    return [head + " Both validations, side by side:", "",
            f"| gain (nats per word, 95% CI) | {name}, before the filter (run {before['run']}) | {mine}, after |",
            "|---|---|---|", *[f"| {k} | {fig(before['gains'].get(k))} | {fig(doc['gains'].get(k))} |" for k in kinds],
            ""]


LATEST = "latest.json"


def write(doc: dict, out: Path) -> list[str]:
    """validation.json, the plots, the validation's card (README.md) and its manifest.json in
    ``out``; nothing outside it is touched (a release is never edited)."""
    out.mkdir(parents=True, exist_ok=True)
    plots = loss_plots(doc, out)
    doc["plots"] = plots
    atomic_write_json(out / "validation.json", doc)
    (out / "README.md").write_text(card_section(doc, plots))
    files = [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(out.rglob("*")) if p.is_file() and "_work" not in p.relative_to(out).parts
             and p.name != "manifest.json"]
    atomic_write_json(out / "manifest.json", {"release": doc.get("release_version"), "files": files})
    return plots


def point_latest(validations: Path, run: str) -> None:
    """``validation/latest.json`` names the newest validation of the release (the one file
    there that a later validation rewrites)."""
    atomic_write_json(validations / LATEST, {"run": run, "card": f"{run}/README.md",
                                             "validation": f"{run}/validation.json"})
