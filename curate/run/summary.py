"""The end-of-run summary: rows per status per stage and the frequent error codes,
read from the shard markers (no Parquet file is opened)."""

from __future__ import annotations

import collections

from rich.table import Table

from ..catalog import Catalog

STATUSES = ("ok", "filtered", "failed", "transient")


def stage_summaries(catalog: Catalog, fingerprints: dict[str, str], n_shards: int) -> dict[str, dict]:
    out = {}
    for stage, fp in fingerprints.items():
        sd = catalog.stage_dir(stage, fp)
        counts: collections.Counter = collections.Counter()
        codes: collections.Counter = collections.Counter()
        sums: collections.Counter = collections.Counter()
        done = 0
        for shard in range(n_shards):
            marker = sd.marker(shard)
            if marker is None:
                continue
            done += 1
            counts.update(marker.get("counts", {}))
            codes.update(marker.get("error_codes", {}))
            sums.update(marker.get("sums", {}))
        out[stage] = {"shards_done": done, "shards": n_shards, "rows": sum(counts.values()),
                      "counts": dict(counts), "error_codes": dict(codes.most_common()), "sums": dict(sums)}
    return out


def summary_table(summaries: dict[str, dict], title: str = "curate run summary") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("shards", justify="right")
    table.add_column("rows", justify="right")
    for s in STATUSES:
        table.add_column(s, justify="right", style={"ok": "green", "filtered": "yellow",
                                                    "failed": "red", "transient": "magenta"}[s])
    table.add_column("top error codes", overflow="fold")
    show_llm = any(s["sums"] for s in summaries.values())
    if show_llm:
        table.add_column("tokens in/out", justify="right")
        table.add_column("cost $", justify="right")
    for stage, s in summaries.items():
        codes = ", ".join(f"{c}×{n}" for c, n in list(s["error_codes"].items())[:3])
        row = [stage, f"{s['shards_done']}/{s['shards']}", str(s["rows"])]
        row += [str(s["counts"].get(k, 0)) for k in STATUSES]
        row.append(codes or "-")
        if show_llm:
            sums = s["sums"]
            row.append(f"{int(sums.get('prompt_tokens', 0))}/{int(sums.get('completion_tokens', 0))}" if sums else "-")
            row.append(f"{sums.get('cost_usd', 0):.4f}" if sums else "-")
        table.add_row(*row)
    return table
