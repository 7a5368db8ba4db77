"""`curate sql`: DuckDB over a catalog, one view per table.

Views: ``<stage>`` (the newest fingerprint whose shards are all done, see
``Catalog.view_dir``), ``<stage>_all`` (every fingerprint, with an ``fp``
column), a view per side table a stage wrote (e.g. ``frame_embeddings``),
``runs`` (the run records), ``reviews`` (curators' verdicts from `curate view`,
reviews.py), and the releases' tables (``release_clips``,
``release_annotations``, ... for the latest; ``release_v1_clips``, ... per
version). Only shards whose completion marker matches their file are
visible, side tables' shards included: a half-written or stray file never is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import reviews
from .compact import ViewFiles, subfolders, view_files
from .layout import Catalog
from .sql_text import ident, literal, parquet_scan
from .stage_dir import StageDir
from .storage import is_object_path

if TYPE_CHECKING:  # imported where a connection is made: `curate status` needs only the notices
    import duckdb


@dataclass(eq=False)  # compared by identity (``is``), and a dict key in ``names``
class _StageViews:
    """A stage's views (``<stage>``, ``<stage>_all``, its side tables), worked out from its
    markers when a query first names one: a query over one stage of a 1,000-shard catalog
    reads that stage's markers only."""

    catalog: Catalog
    stage: str
    names: list[str]  # listed up front: the stage, <stage>_all, every side-table folder seen

    def resolve(self) -> tuple[dict[str, str], list[str]]:
        """({view: its SELECT} for the views that have visible files, notices)."""
        shown, newer = self.catalog.view_dir(self.stage)
        selects = {}
        files = view_files(shown) if shown is not None else ViewFiles([])
        if files.table:
            selects[self.stage] = f"SELECT * FROM {parquet_scan(files.table, union_by_name=not files.one_schema)}"
        all_files = [f for sd in self.catalog.stage_dirs(self.stage)
                     for f in (files if sd == shown else view_files(sd)).table]
        if all_files:
            selects[self.stage + "_all"] = f"SELECT * FROM {parquet_scan(all_files, ', hive_partitioning = true')}"
        for side, side_files in files.sides.items():
            selects[side] = f"SELECT * FROM {parquet_scan(side_files)}"
        return selects, view_notices(self.stage, shown, newer)


@dataclass
class CatalogViews:
    con: duckdb.DuckDBPyConnection
    views: list[str]  # a stage's names are listed before its markers are read (see ``names``)
    notices: list[str] = field(default_factory=list)  # e.g. a newer fingerprint still partial
    # view -> its SELECT, not yet created: DuckDB reads every file's footer when a
    # view over 1,000 shards is created, so `curate sql` creates only those a query names.
    deferred: dict[str, str] = field(default_factory=dict)
    # view -> its stage, whose markers are not read yet (the notices about it come then)
    unresolved: dict[str, _StageViews] = field(default_factory=dict)

    def define(self, name: str, select: str) -> None:
        self.deferred[name] = select
        self.views.append(name)

    def define_stage(self, stage: _StageViews) -> None:
        for name in stage.names:
            self.unresolved[name] = stage
            if name not in self.views:
                self.views.append(name)

    def _resolve(self, stage: _StageViews) -> None:
        selects, notices = stage.resolve()
        self.notices += notices
        for name in stage.names:
            if self.unresolved.get(name) is stage:
                del self.unresolved[name]
                if name not in selects:  # e.g. no visible shard, or a side folder of another fingerprint
                    self.views.remove(name)
        self.deferred.update(selects)

    def names(self) -> list[str]:
        """Every view there is (each stage's markers read; no view created)."""
        for stage in list(dict.fromkeys(self.unresolved.values())):
            self._resolve(stage)
        return self.views

    def ensure(self, query: str | None = None) -> None:
        """Create the deferred views ``query`` may read (every one for None, or for a
        query about the catalog's own tables such as SHOW TABLES)."""
        if query is not None and not _LISTS_VIEWS.search(query):
            words = {w.lower() for w in _WORD.findall(query)}
            named = [n for n in self.views if n.lower() in words]
        else:
            named = list(self.views)
        for name in named:
            if name in self.unresolved:
                self._resolve(self.unresolved[name])
        for name in named:
            if name in self.deferred:
                self.con.execute(f"CREATE OR REPLACE VIEW {ident(name)} AS {self.deferred.pop(name)}")

    def sql(self, query: str):
        self.ensure(query)
        return self.con.sql(query)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LISTS_VIEWS = re.compile(r"\b(show|describe|summarize|information_schema|duckdb_\w+|sqlite_master|pragma)\b", re.I)


def shards_text(sd: StageDir) -> str:
    return f"{len(sd.visible_shards())}/{sd.n_shards() or '?'} shards"


def view_notices(stage: str, shown: StageDir | None, newer: list[StageDir]) -> list[str]:
    """What a reader of ``stage``'s view should know: newer partial output, or a partial view."""
    out = []
    if shown is not None and not shown.is_complete():
        out.append(f"{stage}: no fingerprint is complete; the view shows fp={shown.fingerprint} "
                   f"({shards_text(shown)})")
    for sd in newer:
        out.append(f"{stage}: a newer fingerprint fp={sd.fingerprint} is partial ({shards_text(sd)}); "
                   f"the view shows fp={shown.fingerprint if shown else '-'}; {stage}_all has every fingerprint "
                   f"(resume with curate run)")
    return out


def open_catalog(catalog_root: Path, lazy: bool = False) -> CatalogViews:
    """An in-memory DuckDB with views over the catalog, and notices about them.
    ``lazy``: a stage's markers are read, and its views created, when ``CatalogViews.sql``
    (or ``ensure``) meets a query naming them; so are the notices about it."""
    import duckdb

    from .storage import register_with_duckdb

    catalog = Catalog(catalog_root)
    con = duckdb.connect(":memory:")
    # A name in a query is a view of the catalog, never a Python variable of curate's that
    # DuckDB's replacement scan would find (`select * from annotations` read a __future__ flag).
    con.execute("SET python_enable_replacements = false")
    register_with_duckdb(con, catalog_root)  # s3:// catalogs: DuckDB reads through fsspec
    out = CatalogViews(con, [])
    for stage in catalog.stages():
        sides = sorted({name for sd in catalog.stage_dirs(stage) for name in subfolders(sd)})
        out.define_stage(_StageViews(catalog, stage, [stage, stage + "_all", *sides]))
    runs = sorted((catalog.root / "runs").glob("*.json"))
    if runs:
        listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in runs)
        out.define("runs", f"SELECT * FROM read_json_auto([{listed}], union_by_name = true)")
    if not is_object_path(catalog.root) and reviews.reviews_path(catalog.root).is_file():
        out.define("reviews", reviews.table_sql(catalog.root))  # every verdict of `curate view`
    if not lazy:
        out.ensure()
    out.views += _release_views(con, catalog.root / "releases")
    return out


def connect(catalog_root: Path) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with views over the catalog; returns (connection, view names)."""
    views = open_catalog(catalog_root)
    return views.con, views.views


def _release_views(con: duckdb.DuckDBPyConnection, releases: Path) -> list[str]:
    """``release_<config>`` for the latest release, ``release_<version>_<config>`` for each,
    and ``release_annotations`` (every task), each with a ``split`` column from the file name;
    ``release_<version>_clip_value`` per valued release and ``clip_value`` for the newest."""
    versions = sorted((p for p in releases.glob("*") if (p / "manifest.json").is_file()),
                      key=lambda p: ((p / "manifest.json").stat().st_mtime, p.name)) if releases.is_dir() else []
    views = []
    for i, folder in enumerate(versions):
        prefixes = [f"release_{re.sub(r'[^A-Za-z0-9_]', '_', folder.name)}_"] + (["release_"] if i == len(versions) - 1 else [])
        tasks = []
        for config in sorted(p for p in (folder / "data").glob("*") if p.is_dir()):
            files = sorted(str(f) for f in config.glob("*.parquet"))
            if not files:
                continue
            select = (f"SELECT * EXCLUDE (filename), regexp_extract(filename, '([^/]+)-[0-9]{{5}}-of-[0-9]{{5}}[.]parquet$', 1) "
                      f"AS split FROM {parquet_scan(files, ', filename = true')}")
            tasks += [select] if config.name != "clips" else []
            for prefix in prefixes:
                con.execute(f"CREATE OR REPLACE VIEW {ident(prefix + config.name)} AS {select}")
                views.append(prefix + config.name)
        if tasks:
            for prefix in prefixes:
                con.execute(f"CREATE OR REPLACE VIEW {ident(prefix + 'annotations')} AS "
                            + " UNION ALL BY NAME ".join(tasks))
                views.append(prefix + "annotations")
        value = folder / "value" / "clip_value.parquet"
        if value.is_file() and (folder / "value" / "manifest.json").is_file():
            select = f"SELECT *, {literal(folder.name)} AS release FROM {parquet_scan([str(value)])}"
            for name in [f"release_{re.sub(r'[^A-Za-z0-9_]', '_', folder.name)}_clip_value", "clip_value"]:
                # ``clip_value``: the newest release that has one (`curate value`)
                con.execute(f"CREATE OR REPLACE VIEW {ident(name)} AS {select}")
                views.append(name)
    return list(dict.fromkeys(views))
