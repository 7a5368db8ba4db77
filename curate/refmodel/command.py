"""`curate validate`: find the release and its settings, start or join Ray,
run the protocol, write the report."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from pathlib import Path

import yaml

from ..console import EXIT_BAD_RECIPE, EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_OK, styled


def release_settings(release: Path):
    """The ``validate:`` section of the recipe saved in the release (defaults when it has none)."""
    from pydantic import ValidationError

    from ..recipe import RecipeError, ValidateConfig, interpolate

    doc = {}
    path = release / "recipe.yaml"
    if path.is_file():
        try:
            doc = interpolate((yaml.safe_load(path.read_text()) or {}).get("validate") or {})
            return ValidateConfig.model_validate(doc)
        except (ValidationError, RecipeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: validate: {exc}") from None
    return ValidateConfig()


def new_validation_id() -> str:
    """``20261203T101500Z-1a2b3c``: sorts by start time."""
    import datetime as dt
    import uuid

    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _version_key(p: Path):
    m = re.fullmatch(r"v(\d+)", p.name)
    return (0, int(m.group(1)), "") if m else (1, 0, p.name)


def find_release(catalog: Path, version: str | None) -> Path:
    releases = catalog / "releases"
    if version:
        target = releases / version
        if not (target / "manifest.json").is_file():
            raise FileNotFoundError(f"no release {version} in {releases}")
        return target
    found = sorted((p for p in releases.glob("*") if (p / "manifest.json").is_file()), key=_version_key) \
        if releases.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no release in {releases}: run `curate release` first")
    return found[-1]


def _control_work(work: Path, name: str) -> Path:
    """A control's own work folder, beside the real run's (each resumes on its own)."""
    return work.with_name(f"{work.name}-control-{name}")


def resolve_target(target: str, version: str | None, console, load_recipe, command: str):
    """(release folder, its validate settings, the recipe or None) of a release folder or a
    recipe (its catalog's newest release, or ``version``); None after saying why not."""
    path = Path(target)
    recipe = None
    try:
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            recipe = load_recipe(target)
            release = find_release(recipe.catalog, version)
            cfg = recipe.validate_ or release_settings(release)
        elif (path / "manifest.json").is_file():
            release = path
            cfg = release_settings(release)
        else:
            console.print(styled(f"{path} is neither a release folder (with manifest.json) nor a recipe", "red"))
            return None
    except (FileNotFoundError, ValueError) as exc:
        console.print(styled(f"{command} refused", "red", f": {exc}"), highlight=False)
        return None
    return release.resolve(), cfg, recipe


@contextlib.contextmanager
def local_ray(recipe):
    """Ray for the training: the recipe's cluster, else a local one (stopped after)."""
    import ray

    from ..run.cluster import init_ray

    started = False
    if not ray.is_initialized():
        ray_cfg = recipe.ray if recipe is not None else None
        # The workers' output stays in Ray's logs: progress comes from refmodel.progress.
        init_ray(ray_cfg.address if ray_cfg else None, ray_cfg.num_cpus if ray_cfg else None,
                 ray_cfg.connect_timeout_s if ray_cfg else 30.0, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _trained(command: str, recipe, console, train):
    """``train()`` with Ray up (local_ray): (its result, None), or (None, the exit code) after
    saying why in one line: the cluster unreachable, a setting refused, or Ctrl-C."""
    from ..devices import DeviceUnavailable
    from ..run.cluster import ClusterUnreachable

    try:
        with local_ray(recipe):
            return train(), None
    except ClusterUnreachable as exc:
        console.print(styled(str(exc), "red"), highlight=False)
        return None, EXIT_ERRORS
    except (ValueError, DeviceUnavailable) as exc:
        console.print(styled(f"{command} refused", "red", f": {exc}"), highlight=False)
        return None, EXIT_BAD_RECIPE
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C: Ray Train's own SIGINT handler aborts the run and exits (SystemExit(1)).
        console.print(styled("interrupted", "yellow", f": `curate {command}` again resumes from the last "
                                                       "checkpoint"), highlight=False)
        return None, EXIT_INTERRUPTED


def _value_filter_before(release: Path) -> dict:
    """For a release built with ``release.value``: the release whose per-clip value decided, and
    its newest validation's figures, so this validation's card sets the two side by side."""
    import json

    from ..catalog.validations import validation_figures

    try:
        vf = json.loads((release / "manifest.json").read_text()).get("value_filter")
    except (OSError, ValueError):
        return {}
    if not vf:
        return {}
    return {"value_filter": {"release": vf["release"], "removed": vf["removed"], "splits": vf["splits"],
                             "validation": validation_figures(release.parent / vf["release"])}}


def validate(target: str, version: str | None, out: str | None, steps: int | None, console, load_recipe,
             controls: bool = False) -> int:
    """``target``: a release folder, or a recipe (its catalog's latest release, or ``version``);
    ``controls``: also the negative controls built from it (controls.py), compared in validation.json."""
    from . import protocol, report

    found = resolve_target(target, version, console, load_recipe, "validate")
    if found is None:
        return EXIT_BAD_RECIPE
    release, cfg, recipe = found
    if steps is not None:
        cfg = cfg.model_copy(update={"steps": steps})
    # Beside the release, never in it: validation/<run>/ with its own manifest; the work folder
    # is shared by the runs of one release, so a killed run resumes whatever its run id.
    run_id = new_validation_id()
    out_dir = Path(out).resolve() if out else release / "validation" / run_id
    work = (Path(out).resolve() if out else release / "validation") / "_work"
    def train() -> dict:
        doc = protocol.run(release, cfg, work, console)
        if controls:
            from . import controls as ctl

            done = {name: protocol.run(release, cfg, _control_work(work, name), console, control=name)
                    for name in ctl.CONTROLS}
            doc["controls"] = ctl.compare(doc, done)
        return doc

    doc, code = _trained("validate", recipe, console, train)
    if doc is None:
        return code
    doc["release_version"] = release.name
    doc |= _value_filter_before(release)
    if controls:
        from .controls import CONTROLS

        for name in CONTROLS:
            shutil.rmtree(_control_work(work, name), ignore_errors=True)
    report.write(doc, out_dir)
    if out is None:
        report.point_latest(release / "validation", run_id)
    shutil.rmtree(work, ignore_errors=True)
    for line in report.reading(doc):
        console.print(line, highlight=False)
    console.print(f"validation: {out_dir / 'validation.json'}")
    console.print(f"its card: {out_dir / 'README.md'}")
    return EXIT_OK


def value(target: str, version: str | None, steps: int | None, folds: int | None, console, load_recipe) -> int:
    """`curate value`: every clip of the release scored by cross-fitted reference models
    (value.py), written to ``<release>/value/``; a killed run resumes."""
    from . import value as cv
    from . import value_report

    found = resolve_target(target, version, console, load_recipe, "value")
    if found is None:
        return EXIT_BAD_RECIPE
    release, cfg, recipe = found
    update = {k: v for k, v in (("steps", steps), ("value_folds", folds)) if v is not None}
    if update:
        from pydantic import ValidationError

        from ..recipe import ValidateConfig

        try:
            cfg = ValidateConfig.model_validate(cfg.model_dump() | update)
        except ValidationError as exc:
            why = "; ".join(f"validate.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            console.print(styled("value refused", "red", f": {why}"), highlight=False)
            return EXIT_BAD_RECIPE
    try:
        cv.check_folds(release, cfg)  # before Ray starts: a too-small release is refused at once
    except ValueError as exc:
        console.print(styled("value refused", "red", f": {exc}"), highlight=False)
        return EXIT_BAD_RECIPE
    out = release / cv.VALUE
    work = out / "_work"
    doc, code = _trained("value", recipe, console, lambda: cv.run(release, cfg, work, console))
    if doc is None:
        return code
    value_report.write(doc, out)
    shutil.rmtree(work, ignore_errors=True)
    c, f = doc["counts"], doc["fence"]
    console.print(f"{c['valued']} clips valued in {doc['folds']} folds: {c['frames_do_not_help']} flagged "
                  f"frames_do_not_help (frame gain's interval not above 0), {c['unlearnable']} unlearnable (loss "
                  f"per word over {f['loss_per_word']:.3f}, Q3 + {f['iqr_multiple']:g} x IQR)", highlight=False)
    console.print(f"table: {out / cv.TABLE}  (curate sql: clip_value)")
    console.print(f"its card: {out / 'README.md'}")
    return EXIT_OK
