"""The end-of-run summary: rows per status per stage and the frequent error codes,
read from the shard markers (no Parquet file is opened)."""

from __future__ import annotations

import collections

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..catalog.layout import Catalog

STATUSES = ("ok", "filtered", "failed", "transient")


def stage_summaries(catalog: Catalog, fingerprints: dict[str, str], n_shards: int) -> dict[str, dict]:
    out = {}
    for stage, fp in fingerprints.items():
        sd = catalog.stage_dir(stage, fp)
        counts: collections.Counter = collections.Counter()
        codes: collections.Counter = collections.Counter()
        sums: collections.Counter = collections.Counter()
        examples: dict[str, str] = {}
        done = 0
        for marker in sd.markers(range(n_shards)).values():
            done += 1
            counts.update(marker.get("counts", {}))
            codes.update(marker.get("error_codes", {}))
            sums.update(marker.get("sums", {}))
            for code, msg in (marker.get("error_examples") or {}).items():
                examples.setdefault(code, msg)
        out[stage] = {"shards_done": done, "shards": n_shards, "rows": sum(counts.values()),
                      "counts": dict(counts), "error_codes": dict(codes.most_common()),
                      "error_examples": examples, "sums": dict(sums)}
    return out


def _tokens(sums: dict) -> str:
    return f"{int(sums.get('prompt_tokens', 0))}/{int(sums.get('completion_tokens', 0))} tokens"


def summary_table(summaries: dict[str, dict], title: str = "curate run summary") -> Group:
    """Rows per status per stage, then the frequent error codes and the LLM spend
    (what this run paid, ``spent``, next to what the catalog's rows cost over
    every run, ``sums``). Fits 80 columns: names and codes are never cut."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("stage", style="bold", no_wrap=True)
    table.add_column("shards", justify="right", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    for s in STATUSES:
        table.add_column(s, justify="right", no_wrap=True, style={
            "ok": "green", "filtered": "yellow", "failed": "red", "transient": "magenta"}[s])
    for stage, s in summaries.items():
        table.add_row(stage, f"{s['shards_done']}/{s['shards']}", str(s["rows"]),
                      *[str(s["counts"].get(k, 0)) for k in STATUSES])
    parts: list = [table]
    width = max([len(name) for name in summaries] or [0])
    codes = [Text.assemble((f"  {stage:<{width}}  ", "bold"),
                           ", ".join(f"{c} ×{n}" for c, n in list(s["error_codes"].items())[:3]))
             for stage, s in summaries.items() if s["error_codes"]]
    if codes:
        parts += [Text("top error codes:"), *codes]
    for stage, s in summaries.items():
        spent = s.get("spent") or {}
        if s["sums"] or spent:
            parts.append(Text(f"LLM ({stage}): this run paid {_tokens(spent)}, ${spent.get('cost_usd', 0):.4f}; "
                              f"the catalog's rows cost {_tokens(s['sums'])}, ${s['sums'].get('cost_usd', 0):.4f} "
                              f"over every run that made them"))
    return Group(*parts)
