"""`curate check`, `run`, `release`, `qa`, `validate` and `value`: the commands given a recipe."""

from __future__ import annotations

from ..console import EXIT_BAD_RECIPE, EXIT_OK, console, err_console, styled


def load_recipe_or_exit(recipe_path: str, ray_address: str | None = None):
    from ..recipe import RecipeError, load_recipe

    try:
        return load_recipe(recipe_path, ray_address=ray_address)
    except RecipeError as exc:
        err_console.print(styled("recipe refused", "red", f" (nothing was run):\n{exc}"), highlight=False)
        raise SystemExit(EXIT_BAD_RECIPE) from None


def cmd_check(args) -> int:
    from ..recipe import RecipeError
    from ..run.planning import plan, preflight

    recipe = load_recipe_or_exit(args.recipe)
    try:
        plans = plan(recipe)
        problems, warnings = preflight(recipe, plans)
        if problems:
            raise RecipeError("\n".join(problems))
    except RecipeError as exc:
        err_console.print(styled("recipe refused", "red", f":\n{exc}"), highlight=False)
        return EXIT_BAD_RECIPE
    for warning in warnings:
        err_console.print(styled("warning", "yellow", f" {warning}"), highlight=False)
    console.print(styled("ok", "green", f" {args.recipe}: catalog {recipe.catalog}, {recipe.shards} shards"))
    for p in plans:
        console.print(f"  {p.name:<11} fp={p.fingerprint}  cpus={p.resources.cpus:g} gpus={p.resources.gpus:g}")
    return EXIT_OK


def cmd_run(args) -> int:
    from ..run.command import run_and_report

    recipe = load_recipe_or_exit(args.recipe, args.ray_address)
    if args.connect_timeout is not None:
        recipe = recipe.model_copy(update={"ray": recipe.ray.model_copy(
            update={"connect_timeout_s": args.connect_timeout})})
    return run_and_report(recipe)


def cmd_release(args) -> int:
    from ..release.build import qa, release

    recipe = load_recipe_or_exit(args.recipe)
    from ..catalog.storage import is_object_path

    if is_object_path(recipe.catalog):  # releases build files and link media in a folder
        err_console.print(styled(f"{args.fn_name}: the catalog {recipe.catalog} is in a bucket; releases are built "
                                 "from a catalog folder (copy it down first, e.g. aws s3 sync)", "red", ""))
        return EXIT_BAD_RECIPE
    if getattr(args, "only_reviewed", False):  # the command line's word over the recipe's release.review
        from ..recipe import ReleaseConfig

        cfg = recipe.release or ReleaseConfig()
        recipe.release = cfg.model_copy(update={"review": cfg.review.model_copy(update={"only_reviewed": True})})
    return release(recipe, args.version, console) if args.fn_name == "release" else qa(recipe, console)


def _recipe_loader(path):
    """load_recipe, its errors as ValueError (the refmodel commands refuse with those)."""
    from ..recipe import RecipeError, load_recipe

    try:
        return load_recipe(path)
    except RecipeError as exc:
        raise ValueError(str(exc)) from None


def cmd_validate(args) -> int:
    from ..refmodel.command import validate

    return validate(args.release, args.version, args.out, args.steps, console, _recipe_loader,
                    controls=getattr(args, "controls", False))


def cmd_value(args) -> int:
    from ..refmodel.command import value

    return value(args.release, args.version, args.steps, args.folds, console, _recipe_loader)
