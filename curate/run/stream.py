"""The driver loop: (stage, shard) units streamed onto every stage's Ray workers.

schedule.py says which units may run; pools.py who runs them and how stages
share the cluster; this loop hands units out (downstream stages first, so a
shard flows through the pipeline before the next one starts when the cluster
is small), collects results, keeps the bars and the run record's per-stage
intervals, and tells media retention which shards are finished.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Callable, Protocol

from ..recipe import RecipeError
from .pools import Cluster, StagePool, request_of
from .ray_errors import failed_in_setup, root_message
from .schedule import ShardSchedule, StageNode, State, Unit
from .worker import ProgressBoard, ShardWorker

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..recipe import Recipe
    from .lease import RunLease
    from .planning import StagePlan
    from .retention import MediaRetention
    from .worker import Secret

log = logging.getLogger("curate.run.stream")

RECORD_EVERY_S = 2.0  # the run record is rewritten at most this often while units finish


class DrivenRun(Protocol):
    """What the driver asks of the run it drives (``Runner``, runner.py): the recipe and
    lease its workers start with, whether a unit must run and how many rows it holds,
    the markers to re-read once it is done, and where the spend is counted."""

    recipe: "Recipe"
    lease: "RunLease"
    spent: dict[str, dict[str, float]]  # per stage: what this run paid (tokens, cost)

    def needs_run(self, p: "StagePlan", unit: int | None) -> bool | None: ...

    def secrets(self, p: "StagePlan") -> dict[str, "Secret"]: ...

    def rows_to_do(self, p: "StagePlan", units: list[int | None]) -> int: ...

    def refresh(self, p: "StagePlan", unit: int | None) -> None: ...


def build_schedule(runner: DrivenRun, plans: list["StagePlan"]) -> ShardSchedule:
    by_name = {p.name: p for p in plans}
    nodes = [StageNode(p.name, tuple(p.inputs), p.cls.scope == "global") for p in plans]
    return ShardSchedule(nodes, runner.recipe.shards, lambda stage, unit: runner.needs_run(by_name[stage], unit))


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()


class PipelineDriver:
    def __init__(self, runner: DrivenRun, plans: list["StagePlan"], schedule: ShardSchedule, ray,
                 progress: "Progress", record: dict, save_record: Callable[[], None],
                 retention: "MediaRetention | None" = None):
        self.runner, self.plans, self.schedule, self.ray = runner, plans, schedule, ray
        self.progress, self.record, self.save_record = progress, record, save_record
        self.retention = retention
        self.on_settled = retention.settled if retention else (lambda stage, unit: None)
        self.by_name = {p.name: p for p in plans}
        self.n_shards = runner.recipe.shards
        self.errors: list[str] = []
        self.t0 = time.time()
        self.board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        total = ray.cluster_resources()
        self.options = {p.name: self._fit(p, total) for p in plans}
        self.pools = {p.name: StagePool(p.name, i, request_of(self.options[p.name]),
                                        self._cap(p, request_of(self.options[p.name]), total), self._starter(p), ray)
                      for i, p in enumerate(plans)}
        self.cluster = Cluster(ray, self.pools, schedule.has_ready,
                               {k: v for k, v in total.items() if k in ("CPU", "GPU", "memory")})
        self.running: dict = {}  # object ref -> (stage, worker, unit)
        self.rows_total = {p.name: 0 for p in plans}
        self.intervals: dict[str, list] = {p.name: [] for p in plans}  # [shard, start, end] (s from t0)
        self.cpu_s: dict[str, float] = {p.name: 0.0 for p in plans}  # summed over the units run
        self._board_rows: dict[str, int] = {}
        self.tasks = {p.name: progress.add_task(p.name, total=1, rows="waiting", shards=self._shards_text(p.name),
                                                start=False)  # its clock starts with its first unit
                      for p in plans}
        self._saved_at = 0.0

    # --- setup ----------------------------------------------------------------
    @staticmethod
    def _fit(p: "StagePlan", total: dict) -> dict:
        """The worker's Ray options, its CPUs capped at what the whole cluster has (a
        stage asking 2 CPUs runs on a 1-CPU machine rather than wait forever)."""
        opts = p.resources.ray_options()
        if total.get("CPU") and opts["num_cpus"] > total["CPU"]:
            log.info("%s asks %s CPUs per worker; the cluster has %s", p.name, opts["num_cpus"], total["CPU"])
            opts["num_cpus"] = total["CPU"]
        if opts.get("memory") and total.get("memory") and opts["memory"] > total["memory"]:
            opts["memory"] = int(total["memory"])
        if opts.get("num_gpus") and opts["num_gpus"] > total.get("GPU", 0):
            raise RecipeError(f"{p.name} asks for {opts['num_gpus']:g} GPU per worker and the cluster has "
                               f"{total.get('GPU', 0):g}: set stages.{p.name}.device: cpu (or auto)")
        return opts

    @staticmethod
    def _cap(p: "StagePlan", request: dict, cluster: dict) -> int:
        """Most workers the stage could use: what the cluster holds, its own limit."""
        fits = [int(cluster.get(k, 0) // v) for k, v in request.items() if v and k in ("CPU", "GPU")]
        cap = max(1, min(fits)) if fits else 1
        return min(cap, p.cls.max_workers) if p.cls.max_workers else cap

    def _starter(self, p: "StagePlan"):
        worker_cls = self.ray.remote(ShardWorker)
        secrets = self.runner.secrets(p)
        recipe, lease = self.runner.recipe, self.runner.lease

        def start():
            return worker_cls.options(**self.options[p.name]).remote(
                p.name, p.params, str(recipe.catalog), str(recipe.path.parent), recipe.shards,
                p.fingerprint, p.inputs, p.resources.model_dump(), self.board,
                run_id=lease.run_id, driver=lease.doc, secrets=secrets)
        return start

    # --- the loop -------------------------------------------------------------
    def run(self) -> list[str]:
        for name in self.by_name:  # shards up to date from the start (e.g. a rerun)
            for unit, state in self.schedule.state[name].items():
                if state is State.UP_TO_DATE:
                    self.on_settled(name, unit)
        while not self.schedule.finished_all():
            self._dispatch()
            self.cluster.retire_idle_for_starved()
            self._retire_finished_stages()
            if not self.running:
                if self.schedule.finished_all():
                    break
                if not any(self.schedule.has_ready(n) for n in self.by_name):
                    raise RuntimeError("scheduler stalled: units wait but none can run")  # a bug, never data
                time.sleep(0.05)
                continue
            done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5)
            self._show_rows()
            if done:
                self._collect(done[0])
            self._maybe_save()
        self._show_rows()
        for pool in self.pools.values():
            pool.retire_all()
        self.ray.kill(self.board)
        self._record_intervals()
        for p in self.plans:
            blocked = self.schedule.count(p.name, State.BLOCKED)
            if blocked:
                n = self.n_shards if p.cls.scope == "global" else blocked
                self.errors.append(f"{p.name}: {n} shard(s) wait for an upstream shard that did not finish")
            self.progress.update(self.tasks[p.name], completed=self.progress.tasks[self.tasks[p.name]].total,
                                 shards=self._shards_text(p.name), rows=self._rows_text(p.name))
        return self.errors

    def _dispatch(self) -> None:
        starving = dict((pool.name, lacking) for pool, lacking in self.cluster.starving())
        reserved: set[str] = set()  # what starved stages downstream lack: no new upstream worker may take it
        for p in reversed(self.plans):  # downstream first
            pool = self.pools[p.name]
            if pool.holds(reserved):
                # Ray places whichever waiting worker fits first: a 1-CPU crawler would
                # take every CPU freed for a 2-CPU segment, one at a time, for ever.
                self._withdraw_unplaced(p.name, pool)
            while self.schedule.has_ready(p.name):
                if self.retention is not None and not self.retention.may_start(p.name):
                    break  # its videos wait on disk for the stages that read them
                worker = pool.idle()
                if worker is None:
                    if pool.holds(reserved):
                        break
                    if not pool.may_grow(self.schedule.open_units(p.name), self.cluster.free):
                        break
                    worker = pool.add()
                self._hand_out(p, pool, worker)
            reserved |= starving.get(p.name, set())

    def _withdraw_unplaced(self, name: str, pool: StagePool) -> None:
        """Retire the stage's workers still waiting to be placed; their shards go back to ready."""
        for ref, (stage, worker, unit, _) in list(self.running.items()):
            if stage == name and not pool.placed(worker):
                del self.running[ref]
                pool.retire(worker)
                self.rows_total[name] -= self.runner.rows_to_do(self.by_name[name], [unit])
                self.schedule.untake(name, unit)

    def _hand_out(self, p: "StagePlan", pool: StagePool, worker) -> None:
        unit = self.schedule.take(p.name)
        worker.busy, worker.unit = True, unit
        ref = worker.actor.run.remote(unit)
        self.running[ref] = (p.name, worker, unit, time.time())
        self.rows_total[p.name] += self.runner.rows_to_do(p, [unit])
        task = self.tasks[p.name]
        self.progress.update(task, total=max(self.rows_total[p.name], 1), rows=self._rows_text(p.name))
        self.progress.start_task(task)

    def _collect(self, ref) -> None:
        name, worker, unit, started = self.running.pop(ref)
        p, pool = self.by_name[name], self.pools[name]
        worker.busy, worker.unit = False, None
        try:
            out = self.ray.get(ref)
        except Exception as exc:  # a stage bug: report it, keep the other shards going
            self._failed(p, pool, worker, unit, exc)
        else:
            for k, v in (out.get("paid") or {}).items():
                self.runner.spent.setdefault(name, {}).setdefault(k, 0)
                self.runner.spent[name][k] += v
            self.runner.refresh(p, unit)
            self.cpu_s[name] += float(out.get("cpu_s", 0.0))
            # The worker's own time: a unit handed to a worker not yet placed waits unseen.
            end = time.time() - self.t0
            begin = max(started - self.t0, end - float(out.get("seconds", 0)))
            self.intervals[name].append([unit, round(begin, 3), round(end, 3)])
            self.schedule.finished(name, unit, ok=True)
            self._settled(name, unit)
            if self.cluster.should_give_way(pool, worker):
                pool.retire(worker)
        self.progress.update(self.tasks[name], shards=self._shards_text(name))

    def _failed(self, p: "StagePlan", pool: StagePool, worker, unit: Unit, exc: BaseException) -> None:
        log.debug("shard failed", exc_info=True)
        if failed_in_setup(exc):  # every worker would fail the same way: stop this stage
            for ref, (n, *_rest) in list(self.running.items()):
                if n == p.name:
                    self.ray.cancel(ref, force=True)
                    del self.running[ref]
            left = self.schedule.abandon(p.name)  # this unit, the others running and the ready ones
            self.errors.append(f"{p.name}: its worker could not start, {len(left)} shard(s) not run: "
                               f"{root_message(exc)}")
            pool.retire_all()
            return
        self.errors.append(f"{p.name} shard {unit if unit is not None else 'all'}: {root_message(exc)}")
        self.schedule.finished(p.name, unit, ok=False)
        if isinstance(exc, self.ray.exceptions.RayActorError):  # the worker died: let the pool replace it
            pool.workers.remove(worker)

    def _settled(self, name: str, unit: Unit) -> None:
        shards = range(self.n_shards) if unit is None else [unit]
        for s in shards:
            self.on_settled(name, s)

    def _retire_finished_stages(self) -> None:
        for name, pool in self.pools.items():
            if pool.workers and not self.schedule.open_units(name):
                pool.retire_all()

    # --- what the user sees -----------------------------------------------------
    def _shards_text(self, name: str) -> str:
        settled = self.schedule.count(name, State.DONE, State.UP_TO_DATE)
        if self.by_name[name].cls.scope == "global":
            settled *= self.n_shards
        return f"{settled}/{self.n_shards} shards"

    def _rows_text(self, name: str) -> str:
        p = self.by_name[name]
        if not self.rows_total[name]:
            if self.schedule.open_units(name):
                return "waiting"
            return "skipped" if self.schedule.count(name, State.BLOCKED, State.FAILED) else "up to date"
        done = self._board_rows.get(name, 0)
        return f"{min(done, self.rows_total[name])}/{self.rows_total[name]} {p.cls.progress_unit}"

    def _show_rows(self) -> None:
        self._board_rows = self.ray.get(self.board.snapshot.remote())
        for name, task in self.tasks.items():
            if self.rows_total[name]:
                self.progress.update(task, completed=min(self._board_rows.get(name, 0), self.rows_total[name]),
                                     rows=self._rows_text(name))

    def _record_intervals(self) -> None:
        for name, spans in self.intervals.items():
            entry = self.record["stages"].setdefault(name, {})
            entry.update(fingerprint=self.by_name[name].fingerprint, units_run=len(spans),
                         cpu_s=round(self.cpu_s[name], 3))  # CPU seconds of the units run
            if spans:
                start, end = min(s[1] for s in spans), max(s[2] for s in spans)
                entry.update(started_at=_iso(self.t0 + start), finished_at=_iso(self.t0 + end),
                             seconds=round(end - start, 3), units=sorted(spans, key=lambda s: s[1]))
            else:
                entry.setdefault("seconds", 0.0)
            entry["errors"] = [e for e in self.errors if e.startswith(f"{name}:") or e.startswith(f"{name} shard")]

    def _maybe_save(self) -> None:
        if time.time() - self._saved_at >= RECORD_EVERY_S:
            self._record_intervals()
            self.save_record()
            self._saved_at = time.time()
