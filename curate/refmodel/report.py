"""``validation/``: validation.json, the loss curves, and the card's
"Does this data teach?" section with a plain reading of the numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..catalog.files import atomic_write_json, sha256_file

BEGIN, END = "<!-- curate validate: begin -->", "<!-- curate validate: end -->"


def loss_plots(doc: dict, out: Path) -> list[str]:
    """plots/loss_<condition>.png: training loss per step (and a running mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    made = []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for cond, hist in doc["history"].items():
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        y = np.asarray(hist)
        ax.plot(np.arange(1, len(y) + 1), y, lw=0.8, alpha=0.5, label="step")
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


def reading(doc: dict) -> list[str]:
    """One plain sentence per gain, and one for QA."""
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
    return out


def card_section(doc: dict, plots: list[str], prefix: str = "validation/") -> str:
    loss, m, t = doc["loss_per_word"], doc["model"], doc["training"]
    lines = [BEGIN, "## Does this data teach?", "",
             f"`curate validate` trained a reference streaming video-LLM (backbone `{m['backbone']}`, "
             f"{m['params']:,} parameters, {m['trainable_params']:,} trained) for {t['steps']} steps, three times "
             f"with the same seed: with the frames aligned, with the frames shuffled in time within each clip, "
             f"and with no frames (a learned constant instead). Each was scored on the same "
             f"{doc['data']['eval_clips']} clips ({doc['data']['eval_words']} words) of the "
             f"`{doc['data']['eval_split']}` split; intervals are paired bootstrap 95% intervals over those clips.",
             "", *[f"- {s}" for s in reading(doc)], "",
             "| condition | loss per word (nats) |", "|---|---|",
             *[f"| {k} | {v:.3f} |" for k, v in loss.items()], "",
             "| gain | nats per word | 95% CI |", "|---|---|---|",
             *[f"| {name} ({g['minus']} - aligned) | {g['nats_per_word']:.3f} | {g['ci95'][0]:.3f} to "
               f"{g['ci95'][1]:.3f} |" for name, g in doc["gains"].items()], ""]
    lines += [f"![{p}]({prefix}{p})" for p in plots]
    lines += ["", f"Details: `{prefix}validation.json` ({doc['hardware'].get('device')}, "
              f"{doc['seconds']:.0f} s).", END, ""]
    return "\n".join(lines)


def write(doc: dict, out: Path, release: Path | None) -> list[str]:
    """validation.json and plots in ``out``; the card section (and manifest) when ``out`` is the release's."""
    out.mkdir(parents=True, exist_ok=True)
    plots = loss_plots(doc, out)
    doc["plots"] = plots
    atomic_write_json(out / "validation.json", doc)
    if release is None:
        return plots
    card = release / "README.md"
    text = card.read_text()
    section = card_section(doc, plots, prefix=f"{out.relative_to(release).as_posix()}/")
    if BEGIN in text and END in text:  # a later validation replaces the earlier section
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text)
    _refresh_manifest(release)
    return plots


def _refresh_manifest(release: Path) -> None:
    """The card changed and validation files were added: the manifest lists them as they are now."""
    path = release / "manifest.json"
    if not path.is_file():
        return
    doc = json.loads(path.read_text())
    files = {f["path"]: f for f in doc.get("files", [])}
    for p in [release / "README.md", *sorted((release / "validation").rglob("*"))]:
        if p.is_file() and "_work" not in p.relative_to(release).parts:
            rel = p.relative_to(release).as_posix()
            files[rel] = {"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p),
                          "rows": files.get(rel, {}).get("rows")}
    doc["files"] = sorted(files.values(), key=lambda f: f["path"])
    atomic_write_json(path, doc)
