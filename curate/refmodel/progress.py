"""One progress bar per condition while the reference model trains.

The training worker (train.py) writes ``<work>/<condition>/seed_<seed>/progress.json``
(step, steps, last loss) as it goes; the driver polls those files. In a
terminal each condition is one bar (its steps over every seed) that updates
in place; elsewhere (a log, CI) each condition is one line, printed when
every seed of it has trained. Nothing of the
workers' own output reaches the console (Ray is started with
``log_to_driver=False``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class TrainingProgress:
    """``with TrainingProgress(work, conditions, steps, console):`` around the training."""

    def __init__(self, work: Path, conditions: list[str], seeds: list[int], steps: int, console,
                 poll_s: float = 0.5, units: dict[str, list[Path]] | None = None):
        """``units``: each bar's training folders (default: ``work/<condition>/seed_<seed>`` per seed;
        per-clip value passes each condition's folder in every fold)."""
        self.work, self.conditions, self.seeds = work, list(conditions), list(seeds)
        self.units = units or {c: [work / c / f"seed_{s}" for s in self.seeds] for c in self.conditions}
        self.per_unit = steps
        self.steps = steps * len(self.units[self.conditions[0]])  # a bar's total: every unit of its condition
        self.console, self.poll_s = console, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: set[str] = set()

    def __enter__(self) -> "TrainingProgress":
        self._done_before = {c for c in self.conditions if self._state(c)[2]}
        self._thread = threading.Thread(target=self._live if self.console.is_terminal else self._lines,
                                        name="validate-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _state(self, condition: str) -> tuple[int, float | None, bool]:
        """(steps done over every unit, last loss, every unit scored)."""
        done, loss, scored = 0, None, True
        for folder in self.units[condition]:
            doc = _read(folder / "progress.json") or {}
            here = (folder / "eval.json").is_file()
            done += int(doc.get("step", self.per_unit if here else 0))
            loss = doc.get("loss", loss)
            scored = scored and here
        return done, loss, scored

    def _live(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                      TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=self.console,
                      transient=False) as bars:
            # Each bar's clock starts with its condition's first step (they train one after another).
            tasks = {c: bars.add_task(f"{c:<8}", total=self.steps, loss="", start=False) for c in self.conditions}
            while True:
                stopping = self._stop.wait(self.poll_s)
                for c, task in tasks.items():
                    step, loss, scored = self._state(c)
                    if (step or scored) and not bars.tasks[task].started:
                        bars.start_task(task)
                    bars.update(task, completed=step, loss="" if loss is None else f"loss {loss:.3f}")
                if stopping:
                    return

    def _lines(self) -> None:
        while True:
            stopping = self._stop.wait(self.poll_s)
            for c in self.conditions:
                step, loss, scored = self._state(c)
                if c in self._said or not scored:
                    continue
                self._said.add(c)
                how = "scored in an earlier run" if c in self._done_before else \
                    f"trained {step}/{self.steps} steps" + ("" if loss is None else f", last loss {loss:.3f}")
                self.console.print(f"{c:<8} {how}", highlight=False)
            if stopping:
                return
