"""One worker of one stage: builds a shard's input, runs the stage, writes the shard.

The runner wraps this class as a Ray actor (one per worker), so a stage's
models load once per worker, and the worker reads and writes the catalog
itself: only small summaries travel back to the driver.
"""

from __future__ import annotations

import collections
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import storage
from ..catalog.layout import Catalog
from ..procs import detach_from_terminal
from .lease import WorkerLease
from .scratch import MediaScratch, scratch_prefix
from .shards import SHARD_COLUMN, combined_digest, join_inputs, read_stage_shard, shard_of, sources_digest
from ..stages import stage_class
from ..stages.base import Resources, StageContext, run_stage_on_table

# Numeric columns summed into markers, the run summary and the run record.
SUMMED_COLUMNS = ("prompt_tokens", "completion_tokens", "cost_usd")


def table_stats(table: pa.Table) -> dict:
    statuses = collections.Counter(table.column("status").to_pylist())
    codes = collections.Counter(c for c in table.column("error_code").to_pylist() if c)
    sums = {c: float(pc.sum(table.column(c)).as_py() or 0) for c in SUMMED_COLUMNS if c in table.column_names}
    top = dict(codes.most_common(20))
    # One message per frequent code, so the run can say what went wrong without opening a shard.
    examples: dict[str, str] = {}
    if top and "error_msg" in table.column_names:
        for code, msg in zip(table.column("error_code").to_pylist(), table.column("error_msg").to_pylist()):
            if code in top and code not in examples and msg:
                examples[code] = msg
    return {"counts": dict(statuses), "error_codes": top, "error_examples": examples, "sums": sums}


class Secret:
    """A value (an API key) that prints as ``***``: it travels to a worker as a
    constructor argument, which Ray does not log, unlike runtime_env options."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def cpu_seconds(stage) -> float:
    """CPU this worker has used: its own threads, the child processes it waited for (ffmpeg,
    a pool shut down), and the helper processes its stage keeps (which count their own)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime + stage.helper_cpu_s


class ShardWorker:
    def __init__(self, stage: str, params: dict, catalog_root: str, recipe_dir: str, n_shards: int,
                 fingerprint: str, inputs: dict[str, str], resources: dict | None = None, board=None, *,
                 run_id: str | None = None, driver: dict | None = None, secrets: dict[str, Secret] | None = None):
        started = time.time()
        detach_from_terminal()  # before any model or library can start a child process
        # The stage reads its key from the environment, as when run by hand (never logged, never a file).
        for name, secret in (secrets or {}).items():
            os.environ[name] = secret.reveal()
        # Commit only while our run holds the catalog, and die with our driver (run/lease.py).
        root = storage.catalog_root(catalog_root)
        self.lease = WorkerLease(root, run_id, driver) if run_id and driver else None
        if self.lease is not None:
            self.lease.watch_driver()
        self.cls = stage_class(stage)
        self.catalog = Catalog(root)
        self.stage_dir = self.catalog.stage_dir(stage, fingerprint)
        self.inputs = {name: self.catalog.stage_dir(name, fp) for name, fp in inputs.items()}
        self.n_shards = n_shards
        self.board = board  # a ProgressBoard actor (or None): rows done, for the driver's bars
        # A catalog in a bucket: the stage works on files in a local scratch folder; media
        # and side tables go up before the shard's marker (run/scratch.py).
        self.scratch, local_root, self.local_stage_dir = None, root, self.stage_dir.path
        if storage.is_object_path(root):
            local_root = Path(tempfile.mkdtemp(prefix=scratch_prefix(run_id, stage)))
            self.scratch = MediaScratch(root, local_root)
            self.local_stage_dir = local_root / "stages" / stage / f"fp={fingerprint}"
        ctx = StageContext(local_root, Path(recipe_dir), 0, n_shards, self.local_stage_dir)
        self.stage = self.cls(self.cls.Params.model_validate(params), ctx)
        self.key = self.cls.input_key_for(self.stage.params)
        if resources is not None:  # what Ray actually granted (recipe overrides included)
            self.stage.resources = Resources.model_validate(resources)
        self.stage.setup()
        self.setup_s = time.time() - started  # what retiring this worker costs (run/pools.py)

    def ready(self) -> float:
        """Seconds this worker took to start (its models loaded)."""
        return self.setup_s

    # --- inputs -----------------------------------------------------------
    def _input(self, shard: int | None) -> tuple[pa.Table, dict[str, str]]:
        """The stage's input rows for ``shard`` (None = every shard, with a shard column)."""
        if not self.inputs:  # a root stage: its sources, partitioned by hash (once per worker)
            if getattr(self, "_source_table", None) is None:
                rows = [r | {SHARD_COLUMN: shard_of(r[self.key], self.n_shards)}
                        for r in self.cls.source_rows(self.stage.params)]
                self._source_table = pa.Table.from_pylist(rows) if rows else None
            table = self._source_table
            if table is not None and shard is not None:
                table = table.filter(pc.equal(table.column(SHARD_COLUMN), shard))
            table = table if table is not None and table.num_rows else pa.table({self.key: pa.array([], pa.string()),
                                                                     SHARD_COLUMN: pa.array([], pa.int64())})
            digest = {"sources": sources_digest(table.column(self.key).to_pylist())}
            return table, digest
        shards = range(self.n_shards) if shard is None else [shard]
        primary_name, *other_names = self.inputs
        tables, digest = {}, {}
        for name, sd in self.inputs.items():
            parts = []
            for s in shards:
                marker = sd.marker(s)
                if marker is None:
                    raise RuntimeError(f"upstream {name} shard {s} is not done")
                digest[f"{name}/{s}"] = marker["sha256"]
                parts.append(read_stage_shard(sd, s, with_shard_column=(name == primary_name)))
            tables[name] = pa.concat_tables(parts, promote_options="default")
        others = [(tables[n], stage_class(n).row_key) for n in other_names]
        primary = tables[primary_name]
        if shard is None:  # a global stage: one hash over every upstream shard's
            digest = combined_digest(digest)
        return join_inputs(primary, others), digest

    # --- one unit of work -------------------------------------------------
    def run(self, shard: int | None) -> dict:
        """Process one shard (or, for a global stage, all shards); write and mark it."""
        started, cpu_started = time.time(), cpu_seconds(self.stage)
        self.stage.ctx = StageContext(self.stage.ctx.catalog_root, self.stage.ctx.recipe_dir,
                                      shard or 0, self.n_shards, self.local_stage_dir)
        table, digest = self._input(shard)
        key = self.key
        shards = list(range(self.n_shards)) if shard is None else [shard]

        # A global stage (e.g. dedup) judges rows against each other: redo it whole.
        kept, retry = (None, set()) if shard is None else \
            self._reusable_rows(shard, set(table.column(key).to_pylist()))
        # An input row is done when it has output rows and none of them is transient.
        done_keys = set(kept.column(key).to_pylist()) - retry if kept is not None else set()
        todo = table.filter(pc.invert(pc.is_in(table.column(key), pa.array(list(done_keys), table.schema.field(key).type)))) \
            if done_keys else table
        input_keys, input_shards = (table.column(key), table.column(SHARD_COLUMN)) \
            if SHARD_COLUMN in table.column_names else (None, None)
        if SHARD_COLUMN in todo.column_names:
            todo = todo.drop_columns([SHARD_COLUMN])
        # A redone input row's other output rows (annotate: its tasks that ended ok or
        # failed) stay as they were: the stage is told to skip them, and any it makes anyway
        # are dropped, so only the transient rows are redone.
        row_key = self.cls.row_key
        keep_rows = set(kept.filter(pc.is_in(kept.column(key), pa.array(list(retry), kept.schema.field(key).type)))
                        .column(row_key).to_pylist()) if kept is not None and retry and row_key != key else set()
        paid_before = self.stage.paid()
        if self.scratch is not None and self.inputs and shard is not None and "video_id" in todo.column_names:
            self.scratch.fetch(todo.column("video_id").to_pylist())
        if self.scratch is not None and shard is not None:
            self._pull_side_tables(shard)
        new = self._process(todo, whole=shard is None, skip=keep_rows)
        if self.scratch is not None and "video_id" in new.column_names:
            self.scratch.push(new.column("video_id").to_pylist())
        paid = {k: v - paid_before.get(k, 0) for k, v in self.stage.paid().items()}
        if keep_rows:
            kept_ids = pa.array(list(keep_rows), new.schema.field(row_key).type)
            new = new.filter(pc.invert(pc.is_in(new.column(row_key), kept_ids)))
        result = pa.concat_tables([kept, new]) if kept is not None else new
        result = result.sort_by(self.cls.row_key) if result.num_rows else result

        parts = self._route(result, key, input_keys, input_shards) if shard is None else {shard: result}
        summaries = []
        for s in shards:
            part = parts.get(s, result.slice(0, 0))
            marker = {"stage": self.cls.name, "fingerprint": self.stage_dir.fingerprint,
                      "upstream": digest, "seconds": round(time.time() - started, 3),
                      "reprocessed_rows": todo.num_rows, "finished_at": time.time()} | table_stats(part)
            if self.scratch is not None:
                self._push_side_tables(s)
            guard = self.lease.commit() if self.lease is not None else None
            summaries.append(self.stage_dir.write_shard(s, part, marker, guard=guard))
        if self.scratch is not None and shard is not None:
            ids = [c.column("video_id").to_pylist() for c in (todo, new) if "video_id" in c.column_names]
            self.scratch.forget(v for col in ids for v in col)
        return {"shards": summaries, "seconds": time.time() - started, "paid": paid,
                "cpu_s": cpu_seconds(self.stage) - cpu_started}

    def _route(self, result: pa.Table, key: str, input_keys, input_shards) -> dict[int, pa.Table]:
        """A global stage's rows by their input row's shard, in one pass (O(rows))."""
        if not result.num_rows:
            return {}
        at = pc.index_in(result.column(key), value_set=input_keys.combine_chunks())
        if at.null_count:
            raise RuntimeError(f"{self.cls.name}: output rows whose {key} is not in the input")
        owner = input_shards.combine_chunks().take(at)
        result = result.append_column("__owner", owner)
        result = result.sort_by([("__owner", "ascending"), (self.cls.row_key, "ascending")])
        owner = result.column("__owner").to_numpy()
        result = result.drop_columns(["__owner"])
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        ends = np.r_[starts[1:], len(owner)]
        return {int(owner[a]): result.slice(a, b - a) for a, b in zip(starts, ends)}

    def _pull_side_tables(self, shard: int) -> None:
        """An earlier write's side tables, which a partial redo extends (filter's embeddings)."""
        name = self.stage_dir.shard_path(shard).name
        for sub in self.stage_dir.path.iterdir():
            if sub.name.startswith("_") or not (sub / name).is_file():
                continue
            local = self.local_stage_dir / sub.name / name
            local.parent.mkdir(parents=True, exist_ok=True)
            sub.fs.get_file((sub / name).key, str(local))

    def _push_side_tables(self, shard: int) -> None:
        """Side tables the stage wrote into the scratch folder go up before the marker."""
        name = self.stage_dir.shard_path(shard).name
        if not self.local_stage_dir.is_dir():
            return
        for sub in sorted(p for p in self.local_stage_dir.iterdir() if p.is_dir() and not p.name.startswith("_")):
            if (sub / name).is_file():
                target = self.stage_dir.path / sub.name / name
                target.fs.put_file(str(sub / name), target.key)

    def _process(self, todo: pa.Table, whole: bool, skip: set | None = None) -> pa.Table:
        """Run the stage over ``todo`` in slices, telling the board after each one."""
        step = todo.num_rows if whole or not self.cls.progress_rows else self.cls.progress_rows
        parts = [self.cls.schema().empty_table()]
        self.stage.skip_row_keys = frozenset(skip or ())
        try:
            for offset in range(0, todo.num_rows, max(step, 1)):
                part = todo.slice(offset, step)
                parts.append(run_stage_on_table(self.stage, part))
                if self.board is not None:
                    self.board.add.remote(self.cls.name, part.num_rows)
        finally:
            self.stage.skip_row_keys = frozenset()
        return pa.concat_tables(parts)

    def _reusable_rows(self, shard: int, input_keys: set) -> tuple[pa.Table | None, set]:
        """(rows of an earlier write of this shard that stay valid: not transient, their
        input row still present; the input keys that have a transient row). A shard
        without a valid marker is redone whole: (None, set())."""
        if self.stage_dir.marker(shard) is None:
            return None, set()
        old = self.stage_dir.read_shard(shard)
        if not old.num_rows:
            return old, set()
        key_type = old.schema.field(self.key).type
        transient = pc.equal(old.column("status"), "transient")
        retry = set(old.filter(transient).column(self.key).to_pylist())
        keep = pc.and_(pc.invert(transient), pc.is_in(old.column(self.key), pa.array(list(input_keys), key_type)))
        return old.filter(keep), retry

    def close(self) -> None:
        try:
            self.stage.teardown()
        finally:
            if self.scratch is not None:  # everything in it went up with its shard
                import shutil

                shutil.rmtree(self.scratch.local, ignore_errors=True)


class ProgressBoard:
    """A tiny Ray actor the workers tell how many input rows they finished."""

    def __init__(self):
        self.rows: dict[str, int] = {}

    def add(self, stage: str, n: int) -> None:
        self.rows[stage] = self.rows.get(stage, 0) + n

    def snapshot(self) -> dict[str, int]:
        return dict(self.rows)
