"""`curate run`: plan (stage, shard) units and run them on Ray.

Every (stage, shard) is a unit of work. A unit runs as soon as the same
shard of every stage it reads is done (stream.py, schedule.py), on a pool of
Ray actors per stage (one stage instance each, so models load once per
worker; pools.py). A shard is skipped when its marker is valid, its
upstream shards are unchanged and it holds no ``transient`` row.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..catalog.files import atomic_write_json
from ..catalog.layout import Catalog
from ..catalog.storage import is_object_path
from ..recipe import Recipe, RecipeError
from .cluster import ClusterUnreachable, init_ray
from .lease import RunLease
from .planning import StagePlan, plan, preflight
from .retention import MediaRetention
from .scratch import sweep
from .shards import combined_digest, sources_by_shard, sources_digest
from .stream import PipelineDriver, build_schedule
from .worker import Secret

log = logging.getLogger("curate.run.runner")

# Environment variables local and cluster workers need to see like the driver.
_PASSTHROUGH_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "CURATE_CACHE")


@dataclass
class RunResult:
    run_id: str
    catalog: Path
    stages: list[StagePlan]
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C: the record says "interrupted"; a rerun resumes
    record_path: Path | None = None
    summaries: dict[str, dict] = field(default_factory=dict)  # per stage: rows per status, codes, sums

    @property
    def ok(self) -> bool:
        return not self.errors


def new_run_id() -> str:
    """``20261203T091500Z-1a2b3c``: sorts by start time; names the run record and the run's folder."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("curate", "yt-dlp", "ray", "pyarrow", "duckdb", "faster-whisper", "open_clip_torch", "torch", "openai"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _init_ray(recipe: Recipe, plans: list[StagePlan]):
    import ray

    if ray.is_initialized():
        return ray, False
    # Never a secret here: Ray writes runtime_env options to its logs (API keys go to
    # the workers as constructor arguments, see Runner.secrets).
    env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  runtime_env={"env_vars": env} if env else None)
    init_ray(recipe.ray.address, recipe.ray.num_cpus, recipe.ray.connect_timeout_s, **kwargs)
    return ray, True


class Runner:
    def __init__(self, recipe: Recipe, console: Console | None = None, run_id: str | None = None):
        self.recipe = recipe
        self.run_id = run_id  # None: a new one per run()
        self.catalog = Catalog(recipe.catalog)
        self.console = console or Console(stderr=True)
        self.spent: dict[str, dict[str, float]] = {}  # per stage: what this run paid (tokens, cost)
        self._source_cache: dict[str, dict[int, list[str]]] = {}  # root stage -> its sources by shard
        self._marker_cache: dict[tuple[str, str], dict[int, dict]] = {}

    # --- what is left to do ------------------------------------------------
    # Planning reads each upstream marker once per stage and hashes each source once
    # per run: a no-op rerun of 1,000 shards must not cost shards x sources.
    def sources(self, p: StagePlan) -> dict[int, list[str]]:
        """A root stage's source keys by shard (computed once per run)."""
        if p.name not in self._source_cache:
            params = p.cls.Params.model_validate(p.params)
            key = p.cls.input_key_for(params)
            self._source_cache[p.name] = sources_by_shard((r[key] for r in p.cls.source_rows(params)),
                                                          self.recipe.shards)
        return self._source_cache[p.name]

    def _markers(self, name: str, fp: str) -> dict[int, dict]:
        """A stage's valid markers by shard, read once per run and kept current as
        units finish (``refresh``)."""
        key = (name, fp)
        if key not in self._marker_cache:
            self._marker_cache[key] = self.catalog.stage_dir(name, fp).markers(range(self.recipe.shards))
        return self._marker_cache[key]

    def refresh(self, p: StagePlan, unit: int | None) -> None:
        """Re-read the markers a finished unit wrote (a global unit writes every shard)."""
        shards = range(self.recipe.shards) if unit is None else [unit]
        fresh = self.catalog.stage_dir(p.name, p.fingerprint).markers(shards)
        cache = self._markers(p.name, p.fingerprint)
        for s in shards:
            cache.pop(s, None)
            if s in fresh:
                cache[s] = fresh[s]

    def _shard_digest(self, p: StagePlan, s: int) -> dict | None:
        """What shard ``s`` of the stage's input is made of (None: an input shard is not done)."""
        if not p.inputs:
            return {"sources": sources_digest(self.sources(p).get(s, []))}
        parts = {}
        for name, fp in p.inputs.items():
            marker = self._markers(name, fp).get(s)
            if marker is None:
                return None
            parts[f"{name}/{s}"] = marker["sha256"]
        return parts

    def upstream_digests(self, p: StagePlan) -> dict[int, dict | None]:
        """Per shard, the digest of what its input is made of (None: an upstream shard is
        not done). A global stage has one digest for all shards, over every upstream marker."""
        parts = {s: self._shard_digest(p, s) for s in range(self.recipe.shards)}
        if p.cls.scope != "global":
            return parts
        if any(v is None for v in parts.values()):
            return {s: None for s in parts}
        every = {k: v for d in parts.values() for k, v in d.items()}
        return {s: every for s in parts}

    def needs_run(self, p: StagePlan, unit: int | None) -> bool | None:
        """Must this unit run? False: its marker is valid for its input and holds no
        transient row; None: an input shard is not done. A global stage's unit (None)
        covers every shard."""
        markers = self._markers(p.name, p.fingerprint)
        if unit is not None:
            upstream = self._shard_digest(p, unit)
            if upstream is None:
                return None
            marker = markers.get(unit)
            return not (marker and marker.get("upstream") == upstream and not marker["counts"].get("transient"))
        every = self.upstream_digests(p)[0]
        if every is None:
            return None
        combined = combined_digest(every)
        for s in range(self.recipe.shards):
            marker = markers.get(s)
            # Markers written before combined digests hold every upstream hash.
            if not (marker and marker.get("upstream") in (combined, every) and not marker["counts"].get("transient")):
                return True
        return False

    def pending(self, p: StagePlan) -> tuple[list[int | None], list[int]]:
        """(units to run, shards blocked by an unfinished upstream shard), as the catalog stands."""
        for key in [(p.name, p.fingerprint), *p.inputs.items()]:  # read afresh
            self._marker_cache.pop(key, None)
        if p.cls.scope == "global":
            verdict = self.needs_run(p, None)
            blocked = [s for s in range(self.recipe.shards) if self._shard_digest(p, s) is None]
            return ([None] if verdict else []), blocked
        todo, blocked = [], []
        for s in range(self.recipe.shards):
            verdict = self.needs_run(p, s)
            (blocked if verdict is None else todo if verdict else []).append(s)
        return todo, blocked

    # --- running ------------------------------------------------------------
    def run(self) -> RunResult:
        plans = plan(self.recipe)
        # Decide every unit first (markers only, nothing written): a stage with nothing
        # left to run needs no preflight, so a no-op rerun loads no model library.
        schedule = build_schedule(self, plans)
        problems, _ = preflight(self.recipe, [p for p in plans if schedule.open_units(p.name)])
        if problems:  # a missing model fails here, not minutes later in a worker
            raise RecipeError("\n".join(problems))
        run_id = self.run_id or new_run_id()
        result = RunResult(run_id, self.recipe.catalog, plans)
        # One run writes a catalog at a time; a dead run's lease is taken over (run/lease.py).
        self.lease = RunLease(self.catalog.root, run_id)
        self.lease.acquire()
        try:
            return self._run(plans, result, schedule)
        finally:
            self.lease.release()

    def _run(self, plans: list[StagePlan], result: RunResult, schedule) -> RunResult:
        run_id = result.run_id
        record = {
            "run_id": run_id,
            "recipe_path": str(self.recipe.path),
            "recipe": self.recorded_recipe(plans),
            "versions": _versions(),
            "fingerprints": {p.name: p.fingerprint for p in plans},
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "status": "running",
            "stages": {p.name: {"fingerprint": p.fingerprint, "seconds": 0.0, "errors": []} for p in plans},
        }
        self.write_stage_docs(plans)
        result.record_path = self.catalog.write_run(run_id, record)

        ray, owns_ray = None, False
        try:
            with Progress(TextColumn("[bold]{task.description:<11}"), BarColumn(),
                          TextColumn("{task.fields[rows]:>16}"), TextColumn("{task.fields[shards]:>10}"),
                          TimeElapsedColumn(), console=self.console) as progress:
                retention = MediaRetention.for_run(self.catalog, self.recipe.keep_media, self.recipe.shards, plans,
                                                   schedule)
                if any(schedule.has_ready(p.name) for p in plans):  # start Ray only when there is work
                    started = time.time()
                    owns_ray = not _ray_up()  # set first: a Ctrl-C may land while Ray starts
                    ray, _ = _init_ray(self.recipe, plans)
                    record["ray"] = {"address": self.recipe.ray.address or "local",
                                     "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                                     "resources": ray.cluster_resources(),
                                     "start_s": round(time.time() - started, 3)}
                    driver = PipelineDriver(self, plans, schedule, ray, progress, record,
                                            lambda: self.catalog.write_run(run_id, record),
                                            retention)
                    result.errors.extend(driver.run())
                else:
                    for p in plans:
                        progress.add_task(p.name, total=1, completed=1, rows="up to date",
                                          shards=f"{self.recipe.shards}/{self.recipe.shards} shards")
                    if retention is not None:
                        retention.release_settled()
        except (ClusterUnreachable, RecipeError) as exc:  # no cluster; a stage the cluster cannot hold
            record.update(status="failed", error=str(exc), finished_at=_now())
            self.catalog.write_run(run_id, record)
            raise
        except KeyboardInterrupt:
            # Ctrl-C: in-flight shards are abandoned with their workers (a shard's
            # file and marker are each renamed into place, so none is half written).
            result.interrupted = True
        finally:
            if owns_ray and _ray_up():
                import ray as ray_module

                ray_module.shutdown()
            if is_object_path(self.catalog.root):  # what workers killed before closing left here
                sweep([run_id, *(r.get("run_id") for r in self.catalog.runs() if r.get("run_id"))])
        if not result.interrupted:
            try:
                self.compact(plans, record)
            except KeyboardInterrupt:  # a compaction stopped half way is never read (compact.py)
                result.interrupted = True
        from .summary import stage_summaries

        summaries = result.summaries = stage_summaries(self.catalog, {p.name: p.fingerprint for p in plans},
                                                       self.recipe.shards)
        for name, summary in summaries.items():
            summary["spent"] = self.spent.get(name, {})
            record["stages"].setdefault(name, {}).update(summary)
        # "totals": what this run paid (sum them over runs); "catalog_totals": what
        # the rows of these fingerprints cost to make, over every run that made them.
        keys = ("prompt_tokens", "completion_tokens", "cost_usd")
        record["totals"] = {k: sum(s["spent"].get(k, 0) for s in summaries.values()) for k in keys}
        record["catalog_totals"] = {k: sum(s["sums"].get(k, 0) for s in summaries.values()) for k in keys}
        record["status"] = ("interrupted" if result.interrupted
                            else "finished" if result.ok else "finished_with_errors")
        record["finished_at"] = _now()
        self.catalog.write_run(run_id, record)
        return result

    def compact(self, plans: list[StagePlan], record: dict) -> None:
        """Each complete fingerprint in one file per table, for queries (curate/catalog/compact.py).
        A no-op rerun finds them current; a rerun that rewrote a shard compacts again."""
        from ..catalog.compact import compact

        done_names, started = [], time.time()
        for p in plans:
            try:
                done = compact(self.catalog.stage_dir(p.name, p.fingerprint))
            except Exception as exc:  # a cache for readers: views read the shards without it
                log.warning("could not compact %s fp=%s: %s", p.name, p.fingerprint, exc)
                self.console.print(f"warning: {p.name} was not compacted ({exc}); queries read its shards",
                                   markup=False, highlight=False)
                continue
            if done is not None:
                record["stages"][p.name]["compacted"] = {"shards": done.shards, "files": done.files,
                                                         "rows": done.rows, "seconds": round(done.seconds, 3)}
                done_names.append(p.name)
        if done_names:
            self.console.print(f"compacted {', '.join(done_names)} into one file per table for queries "
                               f"({time.time() - started:.1f} s)", markup=False, highlight=False)

    def write_stage_docs(self, plans: list[StagePlan]) -> None:
        """Each fingerprint's stage.json (params, inputs, shards), once."""
        for p in plans:
            sd = self.catalog.stage_dir(p.name, p.fingerprint)
            if not (sd.path / "stage.json").exists():
                atomic_write_json(sd.path / "stage.json", {
                    "stage": p.name, "version": p.cls.version, "fingerprint": p.fingerprint,
                    "params": self._recorded_params(p), "inputs": p.inputs, "shards": self.recipe.shards,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat()})

    # --- what run records and stage.json keep ------------------------------
    def _source_ref(self, p: StagePlan) -> dict:
        """A root stage's sources by hash and count: 100k URLs embedded in every run
        record and stage.json made each one megabytes (the recipe's file lists them)."""
        keys = [k for keys in self.sources(p).values() for k in keys]
        return {"sha256": sources_digest(keys), "count": len(keys)}

    def _recorded_params(self, p: StagePlan) -> dict:
        if p.inputs or not isinstance(p.params.get("sources"), list):
            return p.params
        return p.params | {"sources": self._source_ref(p)}

    def recorded_recipe(self, plans: list[StagePlan]) -> dict:
        doc = self.recipe.model_dump(mode="json", exclude={"path"})
        for p in plans:
            cfg = (doc.get("stages") or {}).get(p.name)
            if not p.inputs and isinstance(cfg, dict) and isinstance(cfg.get("sources"), list):
                cfg["sources"] = self._source_ref(p)
        return doc

    @staticmethod
    def secrets(p: StagePlan) -> dict[str, Secret]:
        """The stage's API key variables, from the driver's environment. They reach the
        worker as constructor arguments: Ray logs runtime_env env_vars, not arguments."""
        names = p.cls.required_env(p.cls.Params.model_validate(p.params))
        return {name: Secret(os.environ[name]) for name in names if name in os.environ}

    def rows_to_do(self, p: StagePlan, units: list[int | None]) -> int:
        """Input rows of the pending units (the bar's total): sources for a root
        stage, else the ok rows of the primary upstream shards."""
        shards = list(range(self.recipe.shards)) if units == [None] else units
        if not p.inputs:
            by_shard = self.sources(p)
            return sum(len(by_shard.get(s, [])) for s in shards)
        primary, fp = next(iter(p.inputs.items()))
        markers = self.catalog.stage_dir(primary, fp).markers(shards)
        return sum(m.get("counts", {}).get("ok", 0) for m in markers.values())
