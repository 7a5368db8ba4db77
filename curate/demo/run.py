"""`curate demo`: serve the bundled demo site on loopback, run the demo recipe
against it, print the summary and an example DuckDB query, stop the site."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..console import styled

from ..paths import data_dir

DEMO_QUERY = """
SELECT video_id, round(duration_s, 1) AS seconds, width, height, has_audio,
       caption_langs, status
FROM crawl ORDER BY video_id
""".strip()


def _site(port: int, console: Console, directories: list[Path] | None = None):
    from .site import DemoSite

    try:
        return DemoSite(directories, port=port)
    except OSError:  # the fixed port is taken: any free port works, the recipe reads the URL from the env
        console.print(f"port {port} is busy; serving the demo site on a free port", style="yellow", markup=False)
        return DemoSite(directories, port=0)


SHIPPED = 4  # demo_00 .. demo_03 ship in curate/demo/data


def more_videos(n_videos: int, folder: Path, console: Console | None = None) -> list[Path]:
    """Demo videos demo_04 .. demo_{n-1} made by the demo generator in ``folder`` (kept: the same name
    and seed give the same video, so a second run reuses them); returns the folders to serve."""
    from .corpus import DEMO_DATA, build_video

    todo = [i for i in range(SHIPPED, n_videos) if not (folder / f"demo_{i:02d}.truth.json").is_file()]
    if todo and console is not None:
        console.print(f"generating {len(todo)} demo video(s) in {folder} (espeak-ng + ffmpeg, a few s each)")
    for i in todo:
        build_video(folder, f"demo_{i:02d}", seed=i)
    return [DEMO_DATA] + ([folder] if n_videos > SHIPPED else [])


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _local_llm(recipe, run_id: str, console: Console):
    """Start the bundled local LLM when the recipe annotates and no endpoint is configured;
    its servers' log goes to the run's folder, ``runs/<run_id>/local-llm.log``."""
    if "annotate" not in recipe.stage_params() or os.environ.get("CURATE_LLM_URL"):
        return contextlib.nullcontext(None)
    log_path = Path(recipe.catalog) / "runs" / run_id / "local-llm.log"
    console.print("starting the bundled local LLM (SmolLM2-135M, llama.cpp) on 127.0.0.1 ...")
    return demo_llm(log_path=log_path)


def demo_llm(**kwargs):
    """The bundled local LLM as the demo runs it (tests and the bench use the same)."""
    from ..llm.server import LocalLLM

    # Annotate runs after every other stage, so the model may use the cores: one
    # single-threaded server per core, up to the demo recipe's concurrency (2).
    # The threads of one llama.cpp server stall each other on shared cores, and
    # its sampling and JSON grammar run in one thread anyway.
    return LocalLLM(n_servers=min(2, os.cpu_count() or 1), n_threads=1, **kwargs)


def _release(recipe, console: Console) -> tuple[int, Path | None]:
    """The demo ends with a release; a rerun over unchanged tables shows the one it made before.
    Returns (exit code, the card's path)."""
    from ..release.build import latest_release, release

    existing = latest_release(recipe)
    if existing is not None:
        console.print(f"\nrelease {existing.name} holds these tables already")
        return 0, existing / "README.md"
    console.print(styled("\nRelease", "bold", "  (curate release <recipe>)"))
    code = release(recipe, console=console, explain=False)  # the demo's last line says it
    made = latest_release(recipe) if code == 0 else None
    return code, (made / "README.md" if made else None)


def run_demo(port: int = 8765, recipe: str | None = None, console: Console | None = None,
             videos: int = SHIPPED) -> int:
    """``videos`` > 4 generates more demo videos and runs ``recipes/demo_large.yaml`` (unless ``recipe``
    is given) over all of them, served as one feed; its catalog is ``catalogs/demo-<videos>``."""
    from ..console import print_result
    from ..run.command import run_and_report
    from ..recipe import load_recipe
    from ..run.hints import catalog_hints
    from ..run.runner import new_run_id
    from ..catalog.views import connect

    if console is None:
        from ..console import console
    directories, demo_catalog = None, None
    if videos < 1:
        raise ValueError("--videos must be at least 1")
    if videos != SHIPPED:
        if videos < SHIPPED:
            raise ValueError(f"--videos: at least the {SHIPPED} shipped videos are served")
        base = Path.cwd() / "catalogs" / f"demo-{videos}"
        directories = more_videos(videos, base / "videos", console)
        demo_catalog = str(base / "catalog")
    default = "demo.yaml" if videos == SHIPPED else "demo_large.yaml"
    recipe_path = Path(recipe) if recipe else data_dir("recipes") / default
    catalog_env = contextlib.nullcontext()
    if "_data" in recipe_path.resolve().parts and "CURATE_DEMO_CATALOG" not in os.environ:
        # The recipe inside an installed wheel: write the catalog here, not in site-packages.
        catalog_env = _env("CURATE_DEMO_CATALOG", str(Path.cwd() / "catalogs" / "demo"))
    if demo_catalog is not None and "CURATE_DEMO_CATALOG" not in os.environ:
        catalog_env = _env("CURATE_DEMO_CATALOG", demo_catalog)
    with catalog_env, _site(port, console, directories) as site, _env("CURATE_DEMO_SITE", site.base_url):
        console.print(f"demo site on {site.base_url}  (pages: {', '.join(site.video_names())})")
        run_id = new_run_id()
        with _local_llm(load_recipe(recipe_path), run_id, console) as llm:
            ctx = _env("CURATE_LLM_URL", llm.base_url) if llm is not None else contextlib.nullcontext()
            with ctx:
                recipe_model = load_recipe(recipe_path)
                code = run_and_report(recipe_model, run_id=run_id)
                catalog = recipe_model.catalog
    card = None
    if code == 0 and recipe_model.release is not None:
        code, card = _release(recipe_model, console)
    con, views = connect(catalog)
    console.print(Text.assemble("\n", ("Example query", "bold"),
                                f"  (curate sql {catalog} \"...\"; views: {', '.join(views)})"))
    console.print(DEMO_QUERY, highlight=False)
    print_result(con.sql(DEMO_QUERY), "table")
    if card is not None:
        console.print(styled("\nDataset card", "bold", f": {card}"), highlight=False)
    elif recipe_model.release is not None:  # the last line says why there is no release, and what to do
        why = catalog_hints(recipe_model)
        console.print(styled("\nno release", "red", f": {why[0]}" if why else
                             f": see the run's errors and the gate's checks above ({catalog}/qa_report.json)"),
                      highlight=False, soft_wrap=True)
    return code
