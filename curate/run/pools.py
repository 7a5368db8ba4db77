"""Each stage's Ray workers, and how stages share the cluster while they stream.

Every stage that has work gets a pool of actors (one stage instance each, so
models load once per worker). Stages run at the same time, so they compete
for CPUs and GPUs; the rules, kept small so they cannot deadlock:

- a pool grows only into free resources (its first worker may wait to be placed);
- a stage with work but no placed worker is *starved*: no stage upstream of it
  starts a worker that would take the room it lacks, and the driver retires
  one worker elsewhere that holds what it lacks (an idle one first, the one
  quickest to restart; else the next one to finish a shard, from a stage
  upstream of it or with a worker to spare, and which either has no shard of
  its own ready or has held its room for a quantum: 10 s, or four times its
  start-up if longer, so stages take turns in slices rather than restarting
  a worker per shard), until the room it needs is free;
- a stage's workers retire as soon as it has nothing left to run.

Downstream stages are served first (runner.py), so a shard flows through the
pipeline before the next one starts when the cluster is small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .schedule import Unit


@dataclass(eq=False)
class Worker:
    actor: Any
    ready_ref: Any  # resolves once Ray has placed the actor and its setup ran
    created: float = field(default_factory=time.monotonic)
    placed_after_s: float | None = None  # from creation to ready (placement wait included)
    setup_s: float = 0.0  # its own start-up (models loaded): what retiring it costs
    unit: Unit | None = None
    busy: bool = False


class StagePool:
    def __init__(self, name: str, order: int, request: dict[str, float], cap: int,
                 start: Callable[[], Any], ray):
        self.name, self.order, self.request, self.cap = name, order, request, cap
        self._start, self._ray = start, ray
        self.workers: list[Worker] = []

    # --- workers ------------------------------------------------------------
    def add(self) -> Worker:
        actor = self._start()
        worker = Worker(actor, actor.ready.remote())
        self.workers.append(worker)
        return worker

    def placed(self, worker: Worker) -> bool:
        if worker.placed_after_s is None:
            done, _ = self._ray.wait([worker.ready_ref], timeout=0)
            if done:
                worker.placed_after_s = time.monotonic() - worker.created
                try:
                    worker.setup_s = float(self._ray.get(worker.ready_ref))
                except Exception:  # its setup failed: the shard handed to it reports why
                    pass
        return worker.placed_after_s is not None

    def idle(self) -> Worker | None:
        return next((w for w in self.workers if not w.busy and self.placed(w)), None)

    def retire(self, worker: Worker) -> None:
        self.retire_many([worker])

    def retire_all(self) -> None:
        self.retire_many(list(self.workers))

    def retire_many(self, workers: list[Worker]) -> None:
        """Stop workers. A placed, idle one closes first (its stage's teardown, its scratch
        folder), for at most CLOSE_S; one still starting or busy is simply killed."""
        closing = [w.actor.close.remote() for w in workers if w.placed_after_s is not None and not w.busy]
        if closing:
            self._ray.wait(closing, num_returns=len(closing), timeout=CLOSE_S)
        for worker in workers:
            self.workers.remove(worker)
            self._ray.kill(worker.actor)

    # --- sharing the cluster --------------------------------------------------
    def starved(self) -> bool:
        """It has work handed out, but none of its workers is placed yet."""
        return bool(self.workers) and not any(self.placed(w) for w in self.workers)

    def may_grow(self, open_units: int, free: Callable[[], dict[str, float]]) -> bool:
        if not self.workers:
            return True
        if len(self.workers) >= min(self.cap, open_units) or not all(self.placed(w) for w in self.workers):
            return False
        available = free()
        return all(available.get(k, 0) >= v for k, v in self.request.items() if v)

    def lacking(self, free: dict[str, float]) -> set[str]:
        return {k for k, v in self.request.items() if v and free.get(k, 0) < v}

    def held(self, placed_only: bool = False) -> dict[str, float]:
        """What its workers hold, or will once Ray places them (Ray does not say which
        of the two a starting worker is: it may be placed and still loading its model)."""
        n = sum(1 for w in self.workers if not placed_only or w.placed_after_s is not None)
        return {k: v * n for k, v in self.request.items()}

    def holds(self, kinds: set[str]) -> bool:
        return any(self.request.get(k, 0) for k in kinds)


def quantum_s(worker: Worker) -> float:
    """How long a worker with work of its own keeps its room before giving way:
    long enough that restarting it later costs at most a fifth of its turn."""
    return max(MIN_QUANTUM_S, 4 * worker.setup_s)


MIN_QUANTUM_S = 10.0
CLOSE_S = 10.0  # how long a retiring worker may take to close before it is killed


def request_of(ray_options: dict) -> dict[str, float]:
    """Ray's resource names for a worker's options (num_cpus -> CPU, num_gpus -> GPU)."""
    out = {"CPU": float(ray_options.get("num_cpus") or 0), "GPU": float(ray_options.get("num_gpus") or 0)}
    if ray_options.get("memory"):
        out["memory"] = float(ray_options["memory"])
    return out


class Cluster:
    """The pools of every stage, and who gives way when one is starved."""

    def __init__(self, ray, pools: dict[str, StagePool], wants: Callable[[str], bool], total: dict[str, float]):
        self.ray, self.pools, self.total = ray, pools, total
        self.wants = wants  # has the stage units ready to hand out?

    def free(self, waiting_for: StagePool | None = None) -> dict[str, float]:
        """The cluster's room less what our workers hold; for ``waiting_for``, the room
        its own unplaced workers would take counts as free. Counted here, not asked
        of Ray: Ray frees a retired worker's share a moment later, and counting on
        its answer then would retire a second worker for the same room."""
        free = dict(self.total)
        for pool in self.pools.values():
            held = pool.held(placed_only=pool is waiting_for)
            for k, v in held.items():
                free[k] = free.get(k, 0) - v
        return free

    def starving(self) -> list[tuple[StagePool, set[str]]]:
        """Starved pools still waiting for room, with what they lack; downstream first,
        and only the most downstream one for each kind of room (CPU, GPU, memory)."""
        out, claimed = [], set()
        for pool in sorted(self.pools.values(), key=lambda p: -p.order):
            if not (pool.starved() or (not pool.workers and self.wants(pool.name))):
                continue
            lacking = pool.lacking(self.free(waiting_for=pool))
            if lacking and not lacking & claimed:
                out.append((pool, lacking))
            claimed |= lacking
        return out

    def retire_idle_for_starved(self) -> None:
        """An idle worker (placed, no shard) gives way to a starved stage."""
        for pool, lacking in self.starving():
            idle = [(w, p) for p in self.pools.values() if p is not pool and p.holds(lacking)
                    for w in p.workers if not w.busy and w.placed_after_s is not None]
            if idle:
                worker, owner = min(idle, key=lambda wp: wp[0].setup_s)
                owner.retire(worker)

    def should_give_way(self, pool: StagePool, worker: Worker) -> bool:
        """A worker of ``pool`` just finished a shard: retire it for a starved stage?
        Only for a stage downstream of it, or when its own stage keeps another worker;
        and while its own stage has shards ready, only once it has held its room for
        a quantum that makes its restart cheap by comparison (stages take turns in
        slices, rather than a worker restart per shard)."""
        if self.wants(pool.name) and worker.placed_after_s is not None and \
                time.monotonic() - (worker.created + worker.placed_after_s) < quantum_s(worker):
            return False
        for starved, lacking in self.starving():
            if starved is pool or not pool.holds(lacking):
                continue
            if starved.order > pool.order or len(pool.workers) > 1:
                return True
        return False
