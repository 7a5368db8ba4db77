"""The card's PNG plots (matplotlib, Agg: no display needed).

Each plot reads one or two numeric columns from DuckDB, not whole tables.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_counts(axis) -> None:
    """Counts are whole: ticks at integers only (a 4-clip release showed 0.5, 1.5 clips)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _values(con: duckdb.DuckDBPyConnection, sql: str) -> list[float]:
    return [r[0] for r in con.execute(sql).fetchall() if r[0] is not None]


def _hist(path: Path, values: list[float], title: str, xlabel: str, marks: list[tuple[float, str]] = (),
          extra: list[tuple[list[float], str]] = ()) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    series = [(values, "released")] + list(extra)
    if any(v for v, _ in series):
        data = [x for v, _ in series for x in v] + [x for x, _ in marks]
        ax.hist([v for v, _ in series], bins=30, range=(min(data), max(data) + 1e-9),
                label=[n for _, n in series], stacked=True)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for x, label in marks:
        ax.axvline(x, color="crimson", linestyle="--", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    _integer_counts(ax.yaxis)
    if len(series) > 1 or marks:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_STATUS_COLORS = {"ok": "tab:green", "filtered": "tab:orange", "failed": "tab:red", "transient": "tab:gray",
                  "clips": "tab:blue"}


def _bars(path: Path, groups: dict[str, dict[str, int]], title: str, ylabel: str) -> None:
    """Stacked bars: x = group, stacks = keys of each group's dict."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    names = list(groups)
    stacks = sorted({k for g in groups.values() for k in g})
    bottom = [0] * len(names)
    for stack in stacks:
        heights = [groups[n].get(stack, 0) for n in names]
        ax.bar(names, heights, bottom=bottom, label=stack, color=_STATUS_COLORS.get(stack))
        bottom = [b + h for b, h in zip(bottom, heights)]
    if not names:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    _integer_counts(ax.yaxis)
    if stacks:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def make_plots(con: duckdb.DuckDBPyConnection, out: Path, views: list[str], min_similarity: float | None,
               wps_range: tuple[float, float]) -> list[tuple[str, str]]:
    """plots/*.png; returns [(relative path, caption)]."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    made = []

    def add(name: str, caption: str) -> Path:
        made.append((f"plots/{name}.png", caption))
        return folder / f"{name}.png"

    _hist(add("clip_durations", "Clip durations (released clips)"),
          _values(con, "SELECT duration_s FROM clips"), "Clip durations", "seconds")
    _hist(add("words_per_second", "Speech rate of released clips, the gate's range dashed"),
          _values(con, "SELECT len(words) / nullif(end_s - start_s, 0) FROM clips"), "Words per second",
          "words / second", marks=[(wps_range[0], "gate min"), (wps_range[1], "gate max")])
    if "filter" in views:
        kept = _values(con, "SELECT sim_mean FROM filter WHERE status = 'ok'")
        dropped = _values(con, "SELECT sim_mean FROM filter WHERE status <> 'ok'")
        marks = [(min_similarity, f"min_similarity {min_similarity:g}")] if min_similarity is not None else []
        _hist(add("clip_similarity", "CLIP similarity of frames and speech, every filtered clip; threshold dashed"),
              kept, "CLIP similarity (frames vs speech)", "mean cosine", marks=marks,
              extra=[(dropped, "filtered out")])
    _hist(add("caption_asr_wer", "Caption-vs-ASR WER per video (videos whose captions were checked)"),
          _values(con, "SELECT caption_asr_wer FROM transcribe WHERE caption_asr_wer IS NOT NULL"),
          "Caption vs ASR word error rate", "WER")
    if "annotate" in views:
        groups: dict[str, dict[str, int]] = {}
        for task, status, n in con.execute("SELECT task, status, count(*) FROM annotate GROUP BY 1, 2 "
                                           "ORDER BY 1, 2").fetchall():
            groups.setdefault(task, {})[status] = n
        _bars(add("annotations", "Annotation rows per task and status (before the release keeps ok rows)"),
              groups, "Annotations per task and status", "rows")
    langs = dict(con.execute("SELECT coalesce(language, 'unknown'), count(*) FROM clips GROUP BY 1 "
                             "ORDER BY 2 DESC LIMIT 12").fetchall())
    _bars(add("languages", "Released clips per language"), {k: {"clips": v} for k, v in langs.items()},
          "Languages", "clips")
    return made
