"""Which (stage, shard) units may run now: the run's dependency bookkeeping, without Ray.

Stages stream shard by shard: a shard of a stage is decided as soon as the
same shard of every stage it reads is settled, so crawl, transcribe and
segment overlap and a GPU stage starts on the first crawled shard. A global
stage (dedup) is one unit over every shard: it waits for all of them, and
the stages after it wait for it.

A unit is *decided* once its inputs are settled: the runner's ``decide``
callback says whether it must run (its marker is missing, stale or holds
transient rows) or is up to date. Until then it waits; if an input unit
fails, it is blocked (and so is everything downstream of it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

Unit = int | None  # a shard, or None: a global stage's one unit


class State(str, Enum):
    WAITING = "waiting"    # an input unit is not settled yet
    READY = "ready"        # decided: must run, not started
    RUNNING = "running"
    DONE = "done"          # ran in this run
    UP_TO_DATE = "up_to_date"  # its marker is valid for its inputs
    FAILED = "failed"      # ran (or was to run) and did not finish
    BLOCKED = "blocked"    # an input unit failed or is missing


SETTLED_OK = {State.DONE, State.UP_TO_DATE}
SETTLED_BAD = {State.FAILED, State.BLOCKED}
OPEN = {State.WAITING, State.READY, State.RUNNING}


@dataclass(frozen=True)
class StageNode:
    name: str
    inputs: tuple[str, ...]
    is_global: bool


# decide(stage, unit) -> True: run it; False: up to date; None: an input's marker is missing.
Decide = Callable[[str, Unit], "bool | None"]


class ShardSchedule:
    def __init__(self, stages: Iterable[StageNode], n_shards: int, decide: Decide):
        self.stages = {s.name: s for s in stages}  # pipeline order: inputs come first
        self.n_shards = n_shards
        self.decide = decide
        self.state: dict[str, dict[Unit, State]] = {}
        self.ready: dict[str, deque[Unit]] = {name: deque() for name in self.stages}
        self.downstream: dict[str, list[str]] = {name: [] for name in self.stages}
        self.abandoned: set[str] = set()
        for node in self.stages.values():
            for i in node.inputs:
                self.downstream[i].append(node.name)
        for node in self.stages.values():
            self.state[node.name] = {u: State.WAITING for u in self.units(node.name)}
        for node in self.stages.values():
            for u in self.units(node.name):
                self._settle_inputs(node.name, u)

    def units(self, stage: str) -> list[Unit]:
        return [None] if self.stages[stage].is_global else list(range(self.n_shards))

    # --- what an input says about a unit ------------------------------------
    def _input_states(self, stage: str, unit: Unit) -> list[State]:
        out = []
        for name in self.stages[stage].inputs:
            states = self.state[name]
            if self.stages[name].is_global:
                out.append(states[None])
            elif unit is None:  # a global stage reads every shard of its input
                out.extend(states.values())
            else:
                out.append(states[unit])
        return out

    def _settle_inputs(self, stage: str, unit: Unit) -> None:
        """Decide a waiting unit whose inputs have all settled."""
        if self.state[stage][unit] is not State.WAITING:
            return
        inputs = self._input_states(stage, unit)
        if any(s in OPEN for s in inputs):
            return
        if any(s in SETTLED_BAD for s in inputs):
            self._set(stage, unit, State.BLOCKED)
            return
        verdict = self.decide(stage, unit)
        if verdict is None:
            self._set(stage, unit, State.BLOCKED)
        elif verdict and stage in self.abandoned:  # it would run on workers that cannot start
            self._set(stage, unit, State.FAILED)
        elif verdict:
            self.state[stage][unit] = State.READY
            self.ready[stage].append(unit)
        else:
            self._set(stage, unit, State.UP_TO_DATE)

    def _set(self, stage: str, unit: Unit, state: State) -> None:
        """A unit settles: the units that read it may now be decided."""
        self.state[stage][unit] = state
        for name in self.downstream[stage]:
            if self.stages[name].is_global:
                self._settle_inputs(name, None)
            elif unit is None:  # a global stage settled: every shard after it may move
                for u in range(self.n_shards):
                    self._settle_inputs(name, u)
            else:
                self._settle_inputs(name, unit)

    # --- events from the runner ---------------------------------------------
    def take(self, stage: str) -> Unit:
        unit = self.ready[stage].popleft()
        self.state[stage][unit] = State.RUNNING
        return unit

    def untake(self, stage: str, unit: Unit) -> None:
        """A unit handed out but never started goes back to the front of the queue."""
        self.state[stage][unit] = State.READY
        self.ready[stage].appendleft(unit)

    def finished(self, stage: str, unit: Unit, ok: bool) -> None:
        self._set(stage, unit, State.DONE if ok else State.FAILED)

    def abandon(self, stage: str) -> list[Unit]:
        """The stage cannot run (its workers could not start): its ready and running
        units fail, and what reads them is blocked; a waiting unit fails when it
        comes due. Returns the units failed now."""
        self.abandoned.add(stage)
        gone = [u for u, s in self.state[stage].items() if s in (State.READY, State.RUNNING)]
        self.ready[stage].clear()
        for u in gone:
            self._set(stage, u, State.FAILED)
        return gone

    # --- questions ----------------------------------------------------------
    def has_ready(self, stage: str) -> bool:
        return bool(self.ready[stage])

    def count(self, stage: str, *states: State) -> int:
        return sum(1 for s in self.state[stage].values() if s in states)

    def open_units(self, stage: str) -> int:
        """Units that may still run in this run (ready, running or waiting)."""
        return self.count(stage, *OPEN)

    def settled(self, stage: str, unit: Unit) -> State:
        return self.state[stage][unit]

    def finished_all(self) -> bool:
        return not any(self.open_units(name) for name in self.stages)
