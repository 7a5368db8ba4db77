"""The dataset card (README.md): Hugging Face front matter, then what a
person needs to judge and use the release."""

from __future__ import annotations

import json

import pyarrow as pa
import yaml

_SIZE = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M")]


def size_category(n: int) -> str:
    return next((label for limit, label in _SIZE if n < limit), "n>10M")


_DTYPES = {"double": "float64", "float": "float32", "halffloat": "float16"}


def hf_feature(t: pa.DataType) -> dict:
    """An Arrow type in the Hub's dataset_info YAML form (as datasets.Features writes it)."""
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **hf_feature(f.type)} for f in t]}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = hf_feature(t.value_type)
        return {"list": inner.get("struct", inner.get("dtype", inner))}
    return {"dtype": _DTYPES.get(str(t), str(t))}


def front_matter(release, name: str, configs: dict[str, dict[str, list[str]]], schemas: dict[str, pa.Schema],
                 sizes: dict[str, dict[str, dict]], total_clips: int) -> dict:
    card = release.card
    doc = {
        "license": release.license,
        "language": card.language,
        "task_categories": card.task_categories,
        "size_categories": [size_category(total_clips)],
        "pretty_name": card.pretty_name or name,
        "configs": [],
        "dataset_info": [],
    }
    for config, by_split in configs.items():
        doc["configs"].append({"config_name": config,
                               "data_files": [{"split": s, "path": f"data/{config}/{s}-*.parquet"} for s in by_split],
                               **({"default": True} if config == "clips" else {})})
        doc["dataset_info"].append({
            "config_name": config,
            "features": [{"name": f.name, **hf_feature(f.type)} for f in schemas[config]],
            "splits": [{"name": s, "num_bytes": sizes[config][s]["bytes"], "num_examples": sizes[config][s]["rows"]}
                       for s in by_split],
            "download_size": sum(v["bytes"] for v in sizes[config].values()),
            "dataset_size": sum(v["bytes"] for v in sizes[config].values()),
        })
    return doc


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render(*, front: dict, name: str, version: str, release, funnel: list[dict], split_rows: dict,
           decontaminated: int, plots: list[tuple[str, str]], recipe_yaml: str, fingerprints: dict,
           versions: dict, results: list, exports: dict[str, dict[str, int]], configs: dict,
           absent_exports: dict[str, str] | None = None, review: dict | None = None,
           review_config=None, changes: list[str] | None = None, word_times: dict | None = None,
           value: dict | None = None, value_validation: dict | None = None) -> str:
    card = release.card
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    out += [f"# {card.pretty_name or name} ({version})", ""]
    if card.description:
        out += [card.description.strip(), ""]
    out += [f"Built by curate {versions.get('curate', '')} from the catalog `{name}`: "
            "web videos with word-timed speech, cut into LiveCC-style clips, scored and deduplicated. "
            "Every number below was computed from the release's own tables.", ""]
    out += ["## Contents", "", table(["config", "split", "rows", "files"], [
        [c, s, split_rows[c][s]["rows"], len(files)] for c, by in configs.items() for s, files in by.items()]), ""]
    if exports:
        out += ["Training exports (`exports/<name>/<split>.jsonl`, last line = byte offset of every record):", "",
                table(["export", "split", "records"], [[e, s, n] for e, by in exports.items() for s, n in by.items()]),
                ""]
    for export, why in (absent_exports or {}).items():
        out += [f"The recipe asks for the `{export}` export (`release.exports`); it is not in this release: {why}.",
                ""]
    out += ["## Funnel", "", "From the videos the recipe listed to the released clips; reasons are the most "
            "frequent codes of the rows a step dropped or failed.", "",
            table(["step", "count", "unit", "top reasons"],
                   [[f["step"], f["count"], f["unit"], f["top_reasons"]] for f in funnel]), ""]
    if word_times is not None:
        out += _word_times(word_times)
    if release.decontaminate is not None:
        out += [f"Decontamination: {decontaminated} video(s) of the list `{release.decontaminate.name}` were "
                "found in the catalog and left out of every split.", ""]
    out += review_section(review, review_config)
    out += value_section(value, value_validation, version)
    out += changes or []
    out += ["## Plots", ""] + [f"![{cap}]({path})\n\n*{cap}*\n" for path, cap in plots]
    out += ["## Quality checks", "", "Every check in `qa_checks/` ran over this release's tables "
            "(zero offending rows = pass).", "",
            table(["check", "severity", "result", "meaning"],
                   [[r.check.name, r.check.severity,
                     "pass" if r.passed else (f"error: {r.error}" if r.error else f"{r.count} row(s)"),
                     r.check.meaning] for r in results]), ""]
    out += ["## Does this data teach?", "", "`curate validate <this folder>` trains a small reference streaming "
            "video-LLM on this release in three conditions (frames aligned, shuffled in time, none), each with "
            "several seeds, and says whether the frames lower the loss of the words, with intervals over the "
            "held-out videos and the seeds, and on how much held-out data; `--controls` adds two negative "
            "controls made from this release (frames, or words, of another video's clip). Each run writes "
            "`validation/<run>/` beside the release (its own `README.md`, `validation.json`, plots and "
            "`manifest.json`); [`validation/latest.json`](validation/latest.json) names the newest. This card "
            "and every file in `manifest.json` stay as they are: `curate verify <this folder>` checks both.", ""]
    out += ["## How to load", "", "```python", "from datasets import load_dataset",
            f'clips = load_dataset("path/to/{version}", "clips")          # configs: {", ".join(configs)}',
            'print(clips["train"][0]["words"][:3])', "```", "",
            "With [mlcroissant](https://github.com/mlcommons/croissant), from `croissant.json` (its records are "
            "read from the Parquet files, which needs the `parquet` extra: `pip install 'mlcroissant[parquet]'`):",
            "", "```python", "import mlcroissant as mlc", "",
            f'ds = mlc.Dataset(jsonld="path/to/{version}/croissant.json")',
            f'first = next(iter(ds.records(record_set="clips")))  # record sets: {", ".join(configs)}; '
            'keys like "clips/clip_id"', "```", "", "```sql",
            "-- duckdb in this folder, or `curate sql <catalog>` (views release_clips, release_annotations, ...)",
            "SELECT clip_id, start_s, end_s, text FROM 'data/clips/*.parquet' LIMIT 5;", "```", "",
            "```python", "from curate.release.exports import read_record   # or: seek to offsets[i], read a line",
            'record = read_record("exports/stream/train.jsonl", 0)', "```", "",
            "Video paths in the tables and exports are relative to this folder"
            + (" (`../../media/...`: the catalog's media, not copied)." if release.media == "reference" else "."), ""]
    out += ["## Licence and takedown", "", f"Dataset licence: `{release.license}`. Each clip keeps its source's "
            "licence (`license` column) and URL (`source_url`); the videos stay their owners'.", "",
            card.takedown, ""]
    if card.citation:
        out += ["## Citation", "", "```", card.citation.strip(), "```", ""]
    out += ["## Provenance", "", "Stage fingerprints (the tables this release was built from):", "",
            table(["stage", "fingerprint"], [[s, f] for s, f in fingerprints.items()]), "",
            "Versions:", "", table(["package", "version"], [[k, v] for k, v in versions.items()]), "",
            "The recipe as run:", "", "```yaml", recipe_yaml.rstrip(), "```", ""]
    return "\n".join(out)


def _gain(g: dict | None) -> str:
    if not g or g.get("nats_per_word") is None:
        return "–"
    lo, hi = g.get("ci95") or (None, None)
    return f"{g['nats_per_word']:+.3f}" + (f" (95% CI {lo:+.3f} to {hi:+.3f})" if lo is not None else "")


def value_section(value: dict | None, validation: dict | None, version: str) -> list[str]:
    """``release.value``: which release's per-clip value decided, the rules, what they removed, and
    that release's validation beside the one `curate validate` writes for this one."""
    if not value:
        return []
    rules = [r for r in (f"visual gain under {value['min_visual_gain']:g} nats per word"
                         if value["min_visual_gain"] is not None else None,
                         f"aligned loss per word above the {value['max_loss_percentile']:g}th percentile"
                         if value["max_loss_percentile"] is not None else None) if r]
    rules += [f"flagged `{f}`" for f in value.get("drop_flagged") or []]
    out = ["## Per-clip value filter", "",
           f"`release.value` left out the clips of split(s) {', '.join(value['splits'])} whose per-clip value in "
           f"{value['release']} (`curate value`: {value['folds']} cross-fitted folds, backbone `{value['backbone']}`) "
           f"was {' or '.join(rules)}: **{value['removed']}** of {value['considered']} clip(s) removed; "
           f"{value['not_valued']} clip(s) had no value there and were kept. Every removed clip and its reason is "
           "in `diff.json`.", ""]
    if value["by_rule"]:
        out += [table(["split", "rule", "clips"], [[r["split"], r["rule"], r["clips"]] for r in value["by_rule"]]), ""]
    if validation:
        out += [f"Validation of {value['release']} (run {validation['run']}), before the filter: visual gain "
                f"{_gain(validation['gains'].get('visual'))}, temporal gain {_gain(validation['gains'].get('temporal'))}. "
                f"`curate validate` on {version} writes its figures beside these in its own card, on the same "
                "held-out clips when the filter spared the held-out splits.", ""]
    else:
        out += [f"{value['release']} has no validation: `curate validate` it and {version} to see whether the filter "
                "helped.", ""]
    return out


def review_section(review: dict | None, config) -> list[str]:
    """What curators' verdicts (`curate view`) did to this release."""
    out = ["## Human review", ""]
    if not review or not (review["reviewed"] or review["removed"]):
        return out + ["No clip of this release was reviewed (`curate view <catalog>` shows each clip with its "
                      "video and words; its keep / reject verdicts go into the `reviews` table, and the next "
                      "release follows them).", ""]
    rule = []
    if config is not None and config.drop_rejected:
        rule.append("clips a curator rejected are left out")
    if config is not None and config.only_reviewed:
        rule.append("only clips a curator kept are released")
    out += [f"{review['reviewed']} of the {review['candidates']} clips that passed every stage were reviewed: "
            f"{review['kept']} kept, {review['rejected']} rejected. "
            + (f"By `release.review`, {' and '.join(rule)}: {review['removed']} clip(s) removed." if rule
               else "`release.review` keeps every clip whatever its verdict."), ""]
    if review["reasons"]:
        out += [table(["verdict", "reason", "clips removed"],
                       [[r["verdict"], r["reason"] or "(no reason given)", r["n"]] for r in review["reasons"]]), ""]
    return out


def _word_times(wt: dict) -> list[str]:
    """The card's "Word times": where each released word's time came from, and the clips whose
    times nothing measured (dropped by segment, or released flagged)."""
    words = wt.get("words") or {}
    rows = [[src, n] for src, n in sorted(words.items())]
    return ["## Word times", "", "Where each released word's time came from (`time_source` on every word): "
            "`caption` (the caption file), `asr` (the recogniser's word timestamps), `aligned` (forced "
            "alignment), `interpolated` (nothing measured it: spread evenly over a span of speech).", "",
            table(["time_source", "words"], rows or [["(no words)", 0]]), "",
            f"Clips with interpolated word times: {wt.get('dropped_clips_interpolated', 0)} dropped by segment "
            f"(`segment.interpolated_times`), {wt.get('released_clips_interpolated', 0)} released "
            "(`stages.segment.interpolated_times: keep`).", ""]


def parse_front_matter(text: str) -> dict:
    """The YAML between the leading ``---`` lines (for tests and tools)."""
    _, head, _ = text.split("---\n", 2)
    return yaml.safe_load(head)


def dumps(doc) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, default=str)
