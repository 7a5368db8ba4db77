"""`curate run` (and `curate demo`'s run): a loaded recipe run, its summary table and
errors printed, and the command's exit code."""

from __future__ import annotations

from ..console import EXIT_BAD_RECIPE, EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_OK, console, err_console, styled


def run_and_report(recipe, run_id: str | None = None) -> int:
    """Run a loaded recipe, print its summary table and errors; the CLI's exit code."""
    from ..recipe import RecipeError
    from .cluster import ClusterUnreachable
    from .lease import CatalogBusy
    from .runner import Runner
    from .summary import summary_table

    try:
        result = Runner(recipe, console=err_console, run_id=run_id).run()
    except RecipeError as exc:
        err_console.print(styled("recipe refused", "red", f" (nothing was run):\n{exc}"), highlight=False)
        return EXIT_BAD_RECIPE
    except CatalogBusy as exc:
        err_console.print(styled("catalog busy", "red", f" (nothing was run): {exc}"), highlight=False)
        return EXIT_ERRORS
    except ClusterUnreachable as exc:
        err_console.print(styled("error", "red", f" {exc}"), highlight=False)
        return EXIT_ERRORS
    console.print(summary_table(result.summaries, title=f"curate run {result.run_id}  ({recipe.catalog})"))
    from .hints import run_hints

    for line in run_hints(result.summaries):
        err_console.print(styled("not the data", "red", f": {line}"), highlight=False)
    for error in result.errors:
        err_console.print(styled("error", "red", f" {error}"), highlight=False)
    console.print(f"run record: {result.record_path}")
    if result.interrupted:
        done = ", ".join(f"{name} {s['shards_done']}/{s['shards']}" for name, s in result.summaries.items())
        err_console.print(styled("interrupted", "yellow", f": shards done and kept: {done}; "
                                                          f"resume with: curate run {recipe.path}"), highlight=False)
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_ERRORS
