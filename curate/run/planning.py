"""The stages a recipe runs, in pipeline order, with their fingerprints (``StagePlan``),
and the preflight that resolves their models before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.layout import fingerprint
from ..recipe import Recipe, RecipeError
from ..stages import available_stages
from ..stages.base import Resources, Stage


@dataclass
class StagePlan:
    name: str
    cls: type[Stage]
    params: dict
    fingerprint: str
    inputs: dict[str, str]  # upstream stage -> fingerprint
    resources: Resources


def plan(recipe: Recipe) -> list[StagePlan]:
    """Fingerprints in pipeline order; refuses a stage whose inputs are not enabled."""
    stages = available_stages()
    enabled = recipe.stage_params()
    plans: dict[str, StagePlan] = {}
    for name, cfg in enabled.items():
        cls = stages[name]
        stage_inputs = cls.inputs_for(cfg)
        missing = [i for i in stage_inputs if i not in enabled]
        stage_inputs += tuple(i for i in cls.optional_inputs_for(cfg) if i in enabled)
        if missing:
            raise RecipeError(f"{recipe.path}: stages.{name} reads {', '.join(missing)}, "
                              f"which the recipe does not enable (add stages.{missing[0]}"
                              + (", or pick another input_stage)" if "input_stage" in cfg.model_fields else ")"))
        params = cfg.model_dump(mode="json", exclude={"resources"})
        inputs = {i: plans[i].fingerprint for i in stage_inputs}
        extra = {"shards": recipe.shards}
        decisive = cls.fingerprint_params(cls.Params.model_validate(params), recipe.path.parent)
        fp = fingerprint(name, cls.version, decisive, list(inputs.values()), extra)
        plans[name] = StagePlan(name, cls, params, fp, inputs, recipe.stage_resources(name))
    return list(plans.values())


def preflight(recipe: Recipe, plans: list[StagePlan]) -> tuple[list[str], list[str]]:
    """(problems that refuse the recipe, warnings): every model the recipe names is
    resolved offline, without loading it, before Ray starts."""
    errors, warnings = [], []
    for p in plans:
        params = p.cls.Params.model_validate(p.params)
        errors += [f"{recipe.path}: {e}" for e in p.cls.preflight(params, recipe.path.parent)]
        warnings += [f"{recipe.path}: {w}" for w in p.cls.preflight_warnings(params, recipe.path.parent)]
    return errors, warnings
