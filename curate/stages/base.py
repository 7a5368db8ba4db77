"""The stage contract (docs/architecture.md): one shard in, one schema-conforming table out.

A stage never raises for a per-sample fault: it returns a row with
``status`` / ``error_code`` / ``error_msg`` instead (see ``curate.status``).
Models and other heavy state load once in ``setup`` (one Ray actor = one
stage instance), never per row.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator

import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .. import schemas


_RECIPE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("recipe_dir", default=None)


@contextlib.contextmanager
def recipe_dir_context(folder: Path) -> Iterator[None]:
    """Relative paths in params resolve against the recipe's folder while validating."""
    token = _RECIPE_DIR.set(folder)
    try:
        yield
    finally:
        _RECIPE_DIR.reset(token)


def current_recipe_dir() -> Path | None:
    """The recipe's folder while its params are validated (``recipe_dir_context``), else None."""
    return _RECIPE_DIR.get()


def _resolve(value: Path) -> Path:
    value = Path(value).expanduser()
    base = _RECIPE_DIR.get()
    return value if value.is_absolute() or base is None else (base / value)


def existing_path(value: Path) -> Path:
    path = _resolve(value)
    if not path.exists():
        raise ValueError(f"no such file: {path} (relative paths are read from the recipe's folder)")
    return path.resolve()


# A path in a recipe that must exist (sources file, cookies, a model checkpoint).
ExistingPath = Annotated[Path, AfterValidator(existing_path)]
# A path in a recipe that the run may create (download archive, output).
RecipePath = Annotated[Path, AfterValidator(lambda v: _resolve(v).resolve())]


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class Resources(BaseModel):
    """What one worker of a stage needs; Ray places workers by it."""

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0)

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory_gb:
            opts["memory"] = int(self.memory_gb * 1024**3)
        return opts


@dataclass(frozen=True)
class StageContext:
    """What a stage may know about the run besides its params."""

    catalog_root: Path
    recipe_dir: Path
    shard: int = 0
    n_shards: int = 1

    @property
    def media_root(self) -> Path:
        return self.catalog_root / "media"

    @property
    def cache_root(self) -> Path:
        return self.catalog_root / "cache"

    # The stage's own fingerprint folder, where it may write side tables
    # (e.g. frame embeddings) as <stage_dir>/<table>/shard=NNNNN.parquet.
    stage_dir: Path | None = None

    def with_shard(self, shard: int) -> "StageContext":
        return StageContext(self.catalog_root, self.recipe_dir, shard, self.n_shards, self.stage_dir)

    def side_table_path(self, table: str) -> Path:
        """Where this shard's rows of side table ``table`` go (write atomically)."""
        base = self.stage_dir if self.stage_dir is not None else self.catalog_root / "side"
        return base / table / f"shard={self.shard:05d}.parquet"


class Stage:
    """Subclass per stage, in ``curate/stages/<name>.py``; register it in ``curate.stages``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[Params]] = Params
    # Upstream tables this stage reads, same shard number. The first is the
    # primary input (its ``ok`` rows are the work); the others are joined to
    # it on ``video_id`` to bring columns along (e.g. crawl's media paths).
    inputs: ClassVar[tuple[str, ...]] = ()
    # Column present in both the primary input and the output that ties each
    # output row to the input row it came from (used for retries and resume).
    input_key: ClassVar[str] = "video_id"
    # Column unique per output row; other stages join this table on it.
    row_key: ClassVar[str] = "video_id"
    # "shard": one unit of work per shard. "global": one unit sees every
    # shard at once (e.g. dedup across videos); the runner routes its output
    # rows back to the shard their input row came from.
    scope: ClassVar[str] = "shard"
    # Cap on parallel workers (e.g. 1 for a stage that keeps a run-wide budget).
    max_workers: ClassVar[int | None] = None
    # Input rows per process() call within a shard, so the progress bar moves
    # row by row on long shards (None = the whole shard at once).
    progress_rows: ClassVar[int | None] = 8
    # What the progress bar counts: the primary input's rows (segment: videos).
    progress_unit: ClassVar[str] = "rows"
    resources: ClassVar[Resources] = Resources()
    # Downloaded media the stage opens (video, audio): with keep_media: false a shard's
    # files are deleted once every stage that reads them has finished it (run/retention.py).
    reads_media: ClassVar[frozenset[str]] = frozenset()
    # Output row keys a rerun already holds for the input rows it hands over (set by
    # the worker: annotate's tasks that ended ok or failed when a sibling task is
    # redone). A stage may skip making them; the worker drops any it makes anyway.
    skip_row_keys: frozenset = frozenset()
    # CPU seconds spent so far by helper processes the stage keeps across shards (segment's
    # decode workers): the worker adds them to a unit's cpu_s, as the OS counts a child's
    # CPU only once the child is waited for.
    helper_cpu_s: float = 0.0

    def __init__(self, params: Params, ctx: StageContext):
        self.params = params
        self.ctx = ctx
        self.log = logging.getLogger(f"curate.{self.name}")

    @classmethod
    def source_rows(cls, params: Params) -> list[dict]:
        """A stage without inputs lists its own work here (crawl: its sources)."""
        raise NotImplementedError(f"{cls.name} has no inputs and lists no sources")

    @classmethod
    def fingerprint_params(cls, params: Params, recipe_dir: Path) -> dict:
        """What of the params decides the output (the fingerprint's part). Stages
        drop settings that only change how work is done (retries, an endpoint's
        port) and add files that change what it gives (prompt templates)."""
        return params.model_dump(mode="json")

    @classmethod
    def inputs_for(cls, params: Params) -> tuple[str, ...]:
        """Upstream tables for these params (a stage may read clips or whole videos)."""
        return cls.inputs

    @classmethod
    def optional_inputs_for(cls, params: Params) -> tuple[str, ...]:
        """Upstream tables joined in when the recipe enables them (never the primary)."""
        return ()

    @classmethod
    def input_key_for(cls, params: Params) -> str:
        return cls.input_key

    @classmethod
    def resources_for(cls, params: Params) -> Resources:
        """What a worker needs for these params: a GPU when a model stage says ``device: cuda``."""
        if getattr(params, "device", None) == "cuda":
            return cls.resources.model_copy(update={"gpus": max(cls.resources.gpus, 1.0)})
        return cls.resources

    @classmethod
    def required_env(cls, params: Params) -> list[str]:
        """Names of environment variables workers need (e.g. an API key's variable)."""
        return []

    @classmethod
    def preflight(cls, params: Params, recipe_dir: Path) -> list[str]:
        """Problems that would stop a worker from starting, found without loading
        anything heavy (e.g. a model that is not on this machine). Each names the
        recipe key and how to fix it; `curate check` and `curate run` refuse the
        recipe (exit 2) before starting Ray."""
        return []

    @classmethod
    def preflight_warnings(cls, params: Params, recipe_dir: Path) -> list[str]:
        """What `curate check` should mention but not refuse (e.g. an endpoint not up yet)."""
        return []

    @classmethod
    def schema(cls) -> pa.Schema:
        return schemas.table_schema(cls.name)

    def setup(self) -> None:
        """Load models / open clients. Called once per worker."""

    def process(self, table: pa.Table) -> list[dict] | pa.Table:
        """Turn one input shard (only ``ok`` rows) into output rows."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what ``setup`` took."""

    def paid(self) -> dict[str, float]:
        """Running totals of what this worker paid for since ``setup``, named like
        the summed columns (prompt_tokens, completion_tokens, cost_usd); cache hits
        excluded. The run record sums them per run."""
        return {}


def run_stage_on_table(stage: Stage, table: pa.Table) -> pa.Table:
    """Run ``stage.process`` on a table and conform the result to the stage's schema.

    The runner uses this for every shard; tests use it to exercise one stage
    without Ray or a catalog.
    """
    out = stage.process(table)
    schema = stage.schema()
    if isinstance(out, pa.Table):
        return schemas.conform(out, schema)
    return schemas.from_rows(list(out), schema)
