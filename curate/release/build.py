"""`curate release` and `curate qa`: build a version in a temp folder, gate it,
and rename it into ``releases/<version>/`` only when it is whole.

A release is immutable: an existing version is refused (exit 2) untouched.
The temp folder lives in ``<catalog>/.release-tmp/``, outside ``releases/``;
a build killed midway leaves only that, which the next build (holding the
catalog's release lock) removes before it starts. A build that ends, however
it ends (released, stopped by the gate, failed), removes its temp folder and
``.release-tmp/`` itself; the lock file ``.release.lock`` stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import yaml
from rich.console import Console
from rich.text import Text

from .. import __version__
from ..catalog.layout import Catalog
from ..catalog.files import atomic_write_json, sha256_file
from ..catalog.validations import validation_figures
from ..console import styled
from ..recipe import Recipe, ReleaseConfig
from . import card, croissant, diff, exports, gate, plots, splits, tables, value_filter

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHOW_ROWS = 3  # offending rows printed per failed check


@dataclass
class Build:
    """A release's tables, built in ``tmp`` and open in ``con``."""

    tmp: Path
    con: duckdb.DuckDBPyConnection
    views: list[str]
    fps: dict[str, str]
    configs: dict[str, dict[str, list[str]]]
    split_names: list[str]
    results: list[gate.Result] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    value: dict | None = None  # what release.value left out (value_filter.summary)

    @contextlib.contextmanager
    def timed(self, step: str):
        t0 = time.perf_counter()
        yield
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - t0


def next_version(releases: Path) -> str:
    numbers = [int(p.name[1:]) for p in releases.glob("v*") if re.fullmatch(r"v\d+", p.name)] if releases.is_dir() else []
    return f"v{max(numbers, default=0) + 1}"


@contextlib.contextmanager
def _locked(root: Path):
    """One release build per catalog at a time; stale temp folders go once the lock is held."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".release.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another release or qa run holds {root / '.release.lock'}") from None
        tmp_root = root / ".release-tmp"
        if tmp_root.is_dir():
            for stale in tmp_root.iterdir():  # left by a killed build: never part of a release
                shutil.rmtree(stale, ignore_errors=True)
        try:
            yield tmp_root
        finally:  # still holding the lock: no other build has a folder in it
            with contextlib.suppress(OSError):  # not there, or not empty (a folder that would not go)
                tmp_root.rmdir()


def _fingerprints(recipe: Recipe) -> dict[str, str]:
    from ..run.planning import plan

    return {p.name: p.fingerprint for p in plan(recipe)}


def build_tables(recipe: Recipe, cfg: ReleaseConfig, tmp: Path) -> Build:
    """Stage views -> work tables -> Parquet shards -> gate views, all in DuckDB."""
    t0 = time.perf_counter()
    fps = _fingerprints(recipe)
    con = duckdb.connect(str(tmp / "_work.duckdb"))
    con.execute(f"SET temp_directory = '{tmp / '_spill'}'")
    con.execute(f"SET memory_limit = '{os.environ.get('CURATE_RELEASE_MEMORY', '2GB')}'")
    con.execute("SET preserve_insertion_order = false")
    views = tables.stage_views(con, Catalog(recipe.catalog), fps, recipe.shards)
    splits.load_inputs(con, cfg)
    tables.load_reviews(con, Catalog(recipe.catalog).root)
    value_source = value_filter.load(con, Catalog(recipe.catalog).root / "releases", cfg.value)
    tables.build_tables(con, views, fps, cfg)
    found = [r[0] for r in con.execute("SELECT DISTINCT split FROM work_splits ORDER BY 1").fetchall()]
    split_names = list(cfg.splits) + [s for s in found if s not in cfg.splits]
    configs = tables.write_parquet(con, tmp, split_names)
    tables.release_views(con, tmp, configs)
    tables.stage_counts(con, views)
    gate.helper_tables(con, cfg.gate, views)
    return Build(tmp, con, views, fps, configs, split_names, timings={"tables": time.perf_counter() - t0},
                 value=value_filter.summary(con, cfg.value, value_source))


def _print_results(console: Console, results: list[gate.Result], failed: list[gate.Result]) -> None:
    passed = sum(r.passed for r in results)
    console.print(f"qa_checks: {passed}/{len(results)} pass")
    for r in results:
        if r.passed:
            continue
        mark = ("FAIL", "red") if r in failed else ("warn", "yellow")
        what = f"error: {r.error}" if r.error else f"{r.count} offending row(s)"
        console.print(Text.assemble("  ", mark, f" {r.check.name} ({r.check.severity}): {what} - {r.check.meaning}"),
                      highlight=False)
        for row in r.rows[:SHOW_ROWS]:
            console.print(f"      {json.dumps(row, default=str)[:300]}", highlight=False, markup=False)


def _versions(catalog: Catalog, fps: dict[str, str]) -> dict:
    """Package versions of the latest run that used these fingerprints (else this process's)."""
    for run in reversed(catalog.runs()):
        if run.get("fingerprints") == fps and run.get("versions"):
            return dict(run["versions"], curate=run["versions"].get("curate", __version__))
    out = {"curate": __version__}
    for pkg in ("duckdb", "pyarrow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def _manifest(folder: Path) -> dict:
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        rows = None
        if path.suffix == ".parquet":
            rows = pq.ParquetFile(path).metadata.num_rows
        elif path.suffix == ".jsonl":
            with open(path, "rb") as f:
                rows = len(exports.read_index(f))
        files.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path), "rows": rows})
    return {"files": files}


def _sizes(tmp: Path, configs: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, dict]]:
    return {c: {s: {"rows": sum(pq.ParquetFile(tmp / f).metadata.num_rows for f in files),
                    "bytes": sum((tmp / f).stat().st_size for f in files)} for s, files in by.items()}
            for c, by in configs.items()}


def _publish(recipe: Recipe, cfg: ReleaseConfig, b: Build, version: str, console: Console) -> None:
    """Everything after a passed gate: media, exports, plots, card, croissant, manifest."""
    con, tmp = b.con, b.tmp
    catalog = Catalog(recipe.catalog)
    written: dict[str, dict[str, int]] = {}
    with b.timed("exports"):
        exports.place_media(con, recipe.catalog, tmp, cfg.media)
        clip_splits = list(b.configs.get("clips", {}))
        if "stream" in cfg.exports:
            written["stream"] = {s: exports.write_stream(con, tmp, s, cfg.stream_query) for s in clip_splits}
        used = {s for c, by in b.configs.items() if c not in ("clips", "livecc_filter") for s in by}
        ann_splits = [s for s in b.split_names if s in used]
        if "sft" in cfg.exports and ann_splits:
            written["sft"] = {s: exports.write_sft(con, tmp, s) for s in ann_splits}
        absent = {e: why for e, why in (
            ("stream", "no clip was released"),
            ("sft", "no annotation of a task other than livecc_filter was released (the recipe annotates "
                    "nothing, or no annotation row ended ok)")) if e in cfg.exports and e not in written}
    min_sim = (recipe.stage_params().get("filter") and getattr(recipe.stages.filter, "min_similarity", None))
    with b.timed("plots"):
        made = plots.make_plots(con, tmp, b.views, min_sim, cfg.gate.words_per_second)
    funnel = tables.funnel(con, b.views)
    atomic_write_json(tmp / diff.FUNNEL, funnel)
    changes = []
    previous = diff.previous_release(catalog.root / "releases", version)
    if previous is not None:  # what this version changed, with the reason for each clip it lost
        with b.timed("diff"):
            diff.load_clips(con, previous, "old_clips")
            con.execute("CREATE OR REPLACE TABLE new_clips AS SELECT clip_id, video_id, split, "
                        + ", ".join(c for c, _ in diff.SCORES) + " FROM work_clips")
            diff.removal_reasons(con, b.views)
            doc = diff.compare(con, previous, version, "SELECT annotation_id, task, md5(output) AS output_md5 "
                                                       "FROM work_annotations")
            doc["funnel"]["after"] = funnel
            plot = "plots/diff_scores.png"
            drawn = diff.plot_scores(con, tmp / plot, previous.name, version)
            atomic_write_json(tmp / diff.DIFF, doc)
            changes = diff.card_section(doc, plot if drawn else None)
    schemas = {c: pq.read_schema(tmp / next(iter(by.values()))[0]) for c, by in b.configs.items()}
    sizes = _sizes(tmp, b.configs)
    total = sum(v["rows"] for v in sizes.get("clips", {}).values())
    front = card.front_matter(cfg, recipe.name, b.configs, schemas, sizes, total)
    n_decon = con.execute("SELECT count(DISTINCT video_id) FROM decontaminated").fetchall()[0][0]
    recipe_text = (recipe.path.read_text() if recipe.path
                   else yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True, exclude={"path"})))
    (tmp / "recipe.yaml").write_text(recipe_text)
    text = card.render(front=front, name=recipe.name, version=version, release=cfg,
                       funnel=funnel, split_rows=sizes, decontaminated=n_decon, plots=made,
                       recipe_yaml=recipe_text, fingerprints=b.fps, versions=_versions(catalog, b.fps),
                       results=b.results, exports=written, absent_exports=absent, configs=b.configs,
                       review=tables.review_summary(con), review_config=cfg.review, changes=changes,
                       word_times=tables.word_times(con), value=b.value,
                       value_validation=validation_figures(catalog.root / "releases" / b.value["release"])
                       if b.value else None)
    (tmp / "README.md").write_text(text)
    atomic_write_json(tmp / "qa_report.json", {"version": version, "checks": [r.as_dict() for r in b.results]})
    m = re.fullmatch(r"v(\d+)", version)
    with b.timed("croissant"):
        croissant.build(tmp, cfg.card.pretty_name or recipe.name, cfg.card.description, cfg.license,
                        f"{m.group(1)}.0.0" if m else version, cfg.card.homepage, cfg.card.citation, b.configs,
                        schemas)
    con.close()
    for leftover in ("_work.duckdb", "_work.duckdb.wal", "_spill"):
        target = tmp / leftover
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    with b.timed("manifest"):
        doc = _manifest(tmp)
    atomic_write_json(tmp / "manifest.json", {"name": recipe.name, "version": version, "fingerprints": b.fps,
                                              **({"value_filter": b.value} if b.value else {}), **doc})


def _say_outside_the_data(recipe: Recipe, console: Console) -> None:
    """When the error rate that stopped the gate comes from a cause no sample had
    (the LLM never answered), say so, and what to do, in one line."""
    from ..run.hints import catalog_hints

    for line in catalog_hints(recipe):
        console.print(styled("not the data", "red", f": {line}; then `curate release` again"), highlight=False,
                      soft_wrap=True)


def latest_release(recipe: Recipe) -> Path | None:
    """The newest release built from exactly the tables the recipe resolves to, if any."""
    fps = _fingerprints(recipe)
    found = []
    for manifest in (Catalog(recipe.catalog).root / "releases").glob("*/manifest.json"):
        with contextlib.suppress(ValueError, OSError):
            if json.loads(manifest.read_text()).get("fingerprints") == fps:
                found.append((manifest.stat().st_mtime, manifest.parent))
    return max(found)[1] if found else None


def release(recipe: Recipe, version: str | None = None, console: Console | None = None,
            explain: bool = True) -> int:
    """Build the next version; ``explain``: say which rows failed outside the data when
    the gate stops on them (the demo says it once, last)."""
    console = console or Console(stderr=True, markup=False, emoji=False)
    cfg = recipe.release or ReleaseConfig()
    catalog = Catalog(recipe.catalog)
    releases = catalog.root / "releases"
    if version is not None and not _VERSION.match(version):
        console.print(styled(f"bad version name {version!r}", "red", " (letters, digits, . _ -; e.g. v3)"))
        return EXIT_REFUSED
    if not (catalog.root / "stages").is_dir():
        console.print(styled(f"no stage tables in {catalog.root}", "red", ": run `curate run` on the recipe first"))
        return EXIT_FAILED
    try:
        with _locked(catalog.root) as tmp_root:
            version = version or next_version(releases)
            target = releases / version
            if target.exists():
                console.print(styled(f"release {version} exists", "red", f" ({target}); releases are immutable, "
                                     "nothing was changed (give --version for a new one)"))
                return EXIT_REFUSED
            tmp = tmp_root / f"{version}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                b = build_tables(recipe, cfg, tmp)
                with b.timed("gate"):
                    b.results = gate.run_checks(b.con, gate.load_checks())
                failed = gate.blocking_failures(b.results, cfg.gate.warnings_block)
                gate.write_report(catalog.root / "qa_report.json", b.results, version=version, blocked=bool(failed))
                _print_results(console, b.results, failed)
                if failed:
                    b.con.close()
                    console.print(styled(f"release {version} stopped by {len(failed)} blocking check(s)", "red",
                                         f"; offending rows in {catalog.root / 'qa_report.json'}; nothing was released"))
                    if explain and any(r.check.name == "error_rate" for r in failed):
                        _say_outside_the_data(recipe, console)
                    return EXIT_FAILED
                _publish(recipe, cfg, b, version, console)
                console.print("built in " + ", ".join(f"{k} {v:.1f} s" for k, v in b.timings.items()))
                releases.mkdir(exist_ok=True)
                os.rename(tmp, target)  # atomic: the version appears whole or not at all
                fd = os.open(releases, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tables.NotReady, RuntimeError) as exc:
        console.print(styled("release not built", "red", f": {exc}"), highlight=False)
        return EXIT_FAILED
    console.print(f"release {version}: {target}")
    console.print(f"card: {target / 'README.md'}")
    return EXIT_OK


def qa(recipe: Recipe, console: Console | None = None) -> int:
    """The checks alone, over tables built from the current stage tables (nothing is released)."""
    console = console or Console(stderr=True, markup=False, emoji=False)
    cfg = recipe.release or ReleaseConfig()
    root = Catalog(recipe.catalog).root
    try:
        with _locked(root) as tmp_root:
            tmp = tmp_root / f"qa-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                b = build_tables(recipe, cfg, tmp)
                results = gate.run_checks(b.con, gate.load_checks())
                b.con.close()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tables.NotReady, RuntimeError) as exc:
        console.print(styled("qa not run", "red", f": {exc}"), highlight=False)
        return EXIT_FAILED
    failed = gate.blocking_failures(results, cfg.gate.warnings_block)
    gate.write_report(root / "qa_report.json", results, version=None, blocked=bool(failed))
    _print_results(console, results, failed)
    console.print(f"report: {root / 'qa_report.json'}")
    return EXIT_FAILED if failed else EXIT_OK
