"""The `curate` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


from ..console import EXIT_BAD_RECIPE, EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_OK, console, err_console, print_result, styled


def _load(recipe_path: str, ray_address: str | None = None):
    from ..recipe import RecipeError, load_recipe

    try:
        return load_recipe(recipe_path, ray_address=ray_address)
    except RecipeError as exc:
        err_console.print(styled("recipe refused", "red", f" (nothing was run):\n{exc}"), highlight=False)
        raise SystemExit(EXIT_BAD_RECIPE) from None


def cmd_check(args) -> int:
    from ..recipe import RecipeError
    from ..run.planning import plan, preflight

    recipe = _load(args.recipe)
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
    from ..console import run_and_report

    recipe = _load(args.recipe, args.ray_address)
    if args.connect_timeout is not None:
        recipe = recipe.model_copy(update={"ray": recipe.ray.model_copy(
            update={"connect_timeout_s": args.connect_timeout})})
    return run_and_report(recipe)


def _catalog_root(arg: str) -> Path:
    """A catalog folder, an object URL (s3://bucket/prefix), or a recipe whose catalog is meant."""
    from ..catalog.storage import ObjectPath, is_object_url

    if is_object_url(arg):
        root = ObjectPath(arg)
        if not (root / "stages").is_dir() and not (root / "runs").is_dir():
            err_console.print(styled(f"no catalog at {root}", "red", " (no stages/ or runs/ under it)"))
            raise SystemExit(EXIT_BAD_RECIPE)
        return root
    path = Path(arg)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _load(arg).catalog
    if not path.is_dir():
        err_console.print(styled(f"no catalog at {path}", "red", " (give a catalog folder or a recipe)"))
        raise SystemExit(EXIT_BAD_RECIPE)
    return path


def cmd_sql(args) -> int:
    import duckdb

    from ..catalog.views import error_line, open_catalog

    opened = open_catalog(_catalog_root(args.catalog), lazy=True)  # views made as queries name them
    con = opened.con
    if args.command and args.query:
        err_console.print("give the query once: as the argument after the catalog, or with -c")
        return EXIT_BAD_RECIPE  # argparse also exits 2 on usage errors
    args.command = args.command or args.query

    def notices():  # about the views made (stderr: a query's output on stdout stays clean)
        for notice in opened.notices:
            err_console.print(f"notice: {notice}", markup=False, highlight=False)

    if not args.command:
        from .sql_shell import run_shell

        opened.ensure()  # every view, as the shell's queries are not known up front
        notices()
        return run_shell(con, opened.views, show=lambda rel: print_result(rel, args.format),
                         say=lambda text: err_console.print(text, markup=False, highlight=False),
                         error=lambda text: err_console.print(text, style="red", markup=False, highlight=False))
    try:
        opened.ensure(args.command)
        notices()
        print_result(con.sql(args.command), args.format)  # errors come from here too (while fetching)
    except duckdb.Error as exc:  # the user's query: one line, no traceback
        err_console.print(styled(error_line(exc, opened.names()), "red"), highlight=False)
        return EXIT_ERRORS
    return EXIT_OK


def cmd_status(args) -> int:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..catalog.layout import Catalog
    from ..run.summary import STATUSES
    from ..catalog.views import view_notices

    catalog = Catalog(_catalog_root(args.catalog))
    runs = catalog.runs()
    last = runs[-1] if runs else {}
    # Fits 80 columns without cutting a fingerprint (people copy them).
    table = Table(title=Text(f"catalog {catalog.root}"), title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True, min_width=16)
    table.add_column("", no_wrap=True)  # view | partial
    table.add_column("shards", justify="right", no_wrap=True)
    for col in STATUSES:
        table.add_column(col, justify="right", no_wrap=True)
    from ..stages import STAGES

    order = list(STAGES)
    notices, top_codes = [], []
    for stage in sorted(catalog.stages(), key=lambda s: order.index(s) if s in order else len(order)):
        shown, newer = catalog.view_dir(stage)
        notices += view_notices(stage, shown, newer)
        # The fingerprint `curate sql` shows, and above it any newer one still partial.
        for sd in [*newer, *([shown] if shown is not None else [])]:
            total = sd.n_shards()
            counts: dict = {}
            codes: dict = {}  # every filter's reason codes, e.g. quality.lm_loss_high
            done = 0
            for s, marker in sd.valid_markers().items():  # size + mtime: no shard is hashed
                if s >= total:
                    continue
                if marker:
                    done += 1
                    for k, v in marker.get("counts", {}).items():
                        counts[k] = counts.get(k, 0) + v
                    for k, v in marker.get("error_codes", {}).items():
                        codes[k] = codes.get(k, 0) + v
            table.add_row(stage, sd.fingerprint, "view" if sd is shown else "partial", f"{done}/{total}",
                          *[str(counts.get(k, 0)) for k in STATUSES])
            if sd is shown and codes:
                top_codes.append(f"{stage}: " + ", ".join(
                    f"{c}×{n}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1])[:3]))
    console.print(table)
    if top_codes:  # below the table, so it stays within 80 columns
        console.print("top reason codes:\n  " + "\n  ".join(top_codes), markup=False, highlight=False)
    for notice in notices:
        console.print(f"notice: {notice}", markup=False, highlight=False)
    if last:
        console.print(f"last run {last.get('run_id')}: {last.get('status')} (started {last.get('started_at')})")
    return EXIT_OK


def cmd_verify(args) -> int:
    """Re-hash every shard against its marker (runs trust a marker's size and mtime)."""
    from ..catalog.layout import Catalog

    from ..catalog.compact import verify as verify_compaction

    catalog = Catalog(_catalog_root(args.catalog))
    checked, bad = catalog.verify(repair=args.repair)
    for sd, shard in bad:
        console.print(f"{sd.stage} fp={sd.fingerprint} shard {shard}: the file does not match its marker"
                      + (" (marker removed: the next run redoes it)" if args.repair else ""), highlight=False)
    bad_compactions = 0
    for sd in catalog.fingerprints():
        for name in verify_compaction(sd, repair=args.repair):
            bad_compactions += 1
            console.print(f"{sd.stage} fp={sd.fingerprint} compaction {name}: the file does not match its manifest"
                          + (" (manifest removed: queries read the shards; the next run compacts again)"
                             if args.repair else ""), highlight=False)
    console.print(f"{checked} shard(s) checked, {len(bad)} mismatched"
                  + (f"; {bad_compactions} compacted file(s) mismatched" if bad_compactions else ""), highlight=False)
    return EXIT_ERRORS if (bad or bad_compactions) and not args.repair else EXIT_OK


def cmd_release(args) -> int:
    from ..release.build import qa, release

    recipe = _load(args.recipe)
    from ..catalog.storage import is_object_path

    if is_object_path(recipe.catalog):  # releases build files and link media in a folder
        err_console.print(styled(f"{args.fn_name}: the catalog {recipe.catalog} is in a bucket; releases are built "
                                 "from a catalog folder (copy it down first, e.g. aws s3 sync)", "red", ""))
        return EXIT_BAD_RECIPE
    return release(recipe, args.version, console) if args.fn_name == "release" else qa(recipe, console)


def cmd_validate(args) -> int:
    from ..recipe import RecipeError, load_recipe
    from ..refmodel.command import validate

    def load(path):
        try:
            return load_recipe(path)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None

    return validate(args.release, args.version, args.out, args.steps, console, load)


def cmd_demo(args) -> int:
    from ..demo.run import run_demo

    try:
        return run_demo(port=args.port, recipe=args.recipe, console=console, videos=args.videos)
    except ValueError as exc:
        err_console.print(str(exc), style="red", highlight=False)
        return EXIT_BAD_RECIPE


def cmd_demo_serve(args) -> int:
    from ..demo.site import serve_forever

    serve_forever(directory=args.directory, port=args.port)
    return EXIT_OK


def cmd_llm_serve(args) -> int:
    from ..llm.server import serve

    return serve(host=args.host, port=args.port, n_threads=args.threads)


def _version() -> str:
    from importlib import metadata

    from .. import __version__

    try:
        return metadata.version("curate")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return __version__


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Build and curate video-LLM training data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"curate {_version()}")
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("run", help="run a recipe (resumes where an earlier run stopped)")
    p.add_argument("recipe")
    p.add_argument("--ray-address", default=None, help='Ray cluster address ("auto", host:port, ray://host:10001)')
    p.add_argument("--connect-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="give up joining the cluster after this long (default: ray.connect_timeout_s, 30)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("check", help="validate a recipe without running it")
    p.add_argument("recipe")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("sql", help="query a catalog with DuckDB (views per stage table)")
    p.add_argument("catalog", help="catalog folder (or its recipe)")
    p.add_argument("query", nargs="?", help="run this query and exit (none: interactive)")
    p.add_argument("-c", "--command", help="the same as QUERY")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(fn=cmd_sql)

    p = sub.add_parser("status", help="shards done / pending and row counts per stage")
    p.add_argument("catalog", help="catalog folder (or its recipe)")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("verify", help="re-hash every shard against its completion marker")
    p.add_argument("catalog", help="catalog folder (or its recipe)")
    p.add_argument("--repair", action="store_true", help="remove the markers of mismatched shards (a run redoes them)")
    p.set_defaults(fn=cmd_verify)

    for name, text in (("release", "build the next release of the recipe's catalog (tables, exports, card)"),
                       ("qa", "run qa_checks/ over the recipe's current tables (the release gate, alone)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("recipe")
        if name == "release":
            p.add_argument("--version", default=None, help="version name (default: the next vN)")
        p.set_defaults(fn=cmd_release, fn_name=name)

    p = sub.add_parser("validate", help="train the reference model on a release: do its frames teach its words?")
    p.add_argument("release", help="a release folder, or a recipe (its latest release, or --version)")
    p.add_argument("--version", default=None, help="the recipe's release to validate (default: the newest)")
    p.add_argument("--out", default=None, help="write here instead of <release>/validation/ (the card is "
                                               "then left as it is)")
    p.add_argument("--steps", type=int, default=None, help="override validate.steps")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("demo", help="serve the demo site on loopback, run the demo recipe, show a query")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--recipe", default=None, help="recipe to run against the demo site (default: the demo recipe)")
    p.add_argument("--videos", type=int, default=4, help="serve this many demo videos (more than the 4 shipped "
                   "are generated; then recipes/demo_large.yaml runs, catalog catalogs/demo-N/catalog)")
    p.set_defaults(fn=cmd_demo)
    demo_sub = p.add_subparsers(dest="demo_command")
    s = demo_sub.add_parser("serve", help="only serve the demo site until Ctrl-C")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--directory", default=None, help="folder of .mp4/.mkv/.webm/.mpg videos (+ <name>.en.vtt) to serve (default: the bundled demo corpus)")
    s.set_defaults(fn=cmd_demo_serve)

    p = sub.add_parser("llm", help="local LLM endpoint")
    llm_sub = p.add_subparsers(dest="llm_command", required=True)
    s = llm_sub.add_parser("serve", help="serve the bundled small model with an OpenAI-compatible API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: llama.cpp's)")
    s.set_defaults(fn=cmd_llm_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Python 3.11's argparse fills an optional positional before later options
    # ("sql CATALOG --format json QUERY"): take the query that is left over.
    if getattr(args, "fn", None) is cmd_sql and args.query is None and len(rest) == 1 and not rest[0].startswith("-"):
        args.query, rest = rest[0], []
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except KeyboardInterrupt:  # outside a run's own handling (e.g. while loading models for check)
        err_console.print("interrupted")
        return EXIT_INTERRUPTED

