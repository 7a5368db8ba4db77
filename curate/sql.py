"""`curate sql`: DuckDB over a catalog, one view per table.

Views: ``<stage>`` (the fingerprint the latest run used), ``<stage>_all``
(every fingerprint, with an ``fp`` column), a view per side table a stage
wrote (e.g. ``frame_embeddings``), ``runs`` (the run records), and the
releases' tables (``release_clips``, ``release_qa``, ``release_annotations``,
... for the latest; ``release_v1_clips``, ... per version). Only
shards with a completion marker are visible: a half-written file never is.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from .catalog import Catalog, StageDir


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _files(sd: StageDir) -> list[str]:
    return [str(sd.shard_path(s)) for s in sd.done_shards() if sd.shard_path(s).exists()]


def _side_tables(sd: StageDir) -> dict[str, list[str]]:
    out = {}
    for sub in sorted(p for p in sd.path.iterdir() if p.is_dir() and not p.name.startswith("_")):
        files = sorted(str(f) for f in sub.glob("shard=*.parquet"))
        if files:
            out[sub.name] = files
    return out


def _parquet(files: list[str], extra: str = "") -> str:
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], union_by_name = true{extra})"


def connect(catalog_root: Path) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with views over the catalog; returns (connection, view names)."""
    catalog = Catalog(catalog_root)
    con = duckdb.connect(":memory:")
    views = []
    for stage in catalog.stages():
        latest = catalog.latest(stage)
        if latest is None:
            continue
        files = _files(latest)
        if files:
            con.execute(f"CREATE VIEW {_ident(stage)} AS SELECT * FROM {_parquet(files)}")
            views.append(stage)
        all_files = [f for sd in catalog.stage_dirs(stage) for f in _files(sd)]
        if all_files:
            con.execute(f"CREATE VIEW {_ident(stage + '_all')} AS SELECT * FROM "
                        f"{_parquet(all_files, ', hive_partitioning = true')}")
            views.append(stage + "_all")
        for side, side_files in _side_tables(latest).items():
            con.execute(f"CREATE VIEW {_ident(side)} AS SELECT * FROM {_parquet(side_files)}")
            views.append(side)
    runs = sorted((catalog.root / "runs").glob("*.json"))
    if runs:
        listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in runs)
        con.execute(f"CREATE VIEW runs AS SELECT * FROM read_json_auto([{listed}], union_by_name = true)")
        views.append("runs")
    views += _release_views(con, catalog.root / "releases")
    return con, views


def _release_views(con: duckdb.DuckDBPyConnection, releases: Path) -> list[str]:
    """``release_<config>`` for the latest release, ``release_<version>_<config>`` for each,
    and ``release_annotations`` (every task), each with a ``split`` column from the file name."""
    import re

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
                      f"AS split FROM {_parquet(files, ', filename = true')}")
            tasks += [select] if config.name != "clips" else []
            for prefix in prefixes:
                con.execute(f"CREATE OR REPLACE VIEW {_ident(prefix + config.name)} AS {select}")
                views.append(prefix + config.name)
        if tasks:
            for prefix in prefixes:
                con.execute(f"CREATE OR REPLACE VIEW {_ident(prefix + 'annotations')} AS "
                            + " UNION ALL BY NAME ".join(tasks))
                views.append(prefix + "annotations")
    return views
