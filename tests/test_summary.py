"""The end-of-run summary at 80 columns: stage names and error codes whole,
and the LLM spend says what this run paid and what the catalog holds."""

from __future__ import annotations

from rich.console import Console

from curate.run.summary import summary_table


def _stage(rows: int, codes: dict, sums: dict | None = None, spent: dict | None = None) -> dict:
    return {"shards_done": 2, "shards": 2, "rows": rows, "counts": {"ok": rows}, "error_codes": codes,
            "sums": sums or {}, **({"spent": spent} if spent is not None else {})}


def test_summary_fits_80_columns_without_cutting_names_or_codes():
    codes = {"crawl.corrupt_media": 1, "crawl.http_404": 2, "crawl.rate_limited": 3}
    summaries = {"crawl": _stage(6, codes), "transcribe": _stage(4, {}), "segment": _stage(4, {}),
                 "annotate": _stage(48, {"llm.invalid_json": 2, "llm.schema": 6},
                                    sums={"prompt_tokens": 123456, "completion_tokens": 7890, "cost_usd": 0.0079},
                                    spent={})}
    console = Console(width=80, record=True, color_system=None)
    console.print(summary_table(summaries, title="curate run 20260101T000000Z-abcdef  (/data/catalogs/x)"))
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    for name in summaries:
        assert f" {name} " in f" {flat} "
    for code in [*codes, "llm.invalid_json", "llm.schema"]:
        assert code in flat
    assert "this run paid 0/0 tokens, $0.0000" in flat
    assert "the catalog's rows cost 123456/7890 tokens, $0.0079" in flat
