"""The `curate` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


from .console import EXIT_BAD_RECIPE, EXIT_ERRORS, EXIT_OK, console, err_console, print_result


def _load(recipe_path: str, ray_address: str | None = None):
    from .recipe import RecipeError, load_recipe

    try:
        return load_recipe(recipe_path, ray_address=ray_address)
    except RecipeError as exc:
        err_console.print(f"[red]recipe refused[/red] (nothing was run):\n{exc}", highlight=False)
        raise SystemExit(EXIT_BAD_RECIPE) from None


def cmd_check(args) -> int:
    from .recipe import RecipeError
    from .run.runner import plan

    recipe = _load(args.recipe)
    try:
        plans = plan(recipe)
    except RecipeError as exc:
        err_console.print(f"[red]recipe refused[/red]:\n{exc}", highlight=False)
        return EXIT_BAD_RECIPE
    console.print(f"[green]ok[/green] {args.recipe}: catalog {recipe.catalog}, {recipe.shards} shards")
    for p in plans:
        console.print(f"  {p.name:<11} fp={p.fingerprint}  cpus={p.resources.cpus:g} gpus={p.resources.gpus:g}")
    return EXIT_OK


def cmd_run(args) -> int:
    from .console import run_and_report

    return run_and_report(_load(args.recipe, args.ray_address))


def _catalog_root(arg: str) -> Path:
    """A catalog folder, or a recipe whose catalog is meant."""
    path = Path(arg)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _load(arg).catalog
    if not path.is_dir():
        err_console.print(f"[red]no catalog at {path}[/red] (give a catalog folder or a recipe)")
        raise SystemExit(EXIT_BAD_RECIPE)
    return path


def cmd_sql(args) -> int:
    import duckdb

    from .sql import connect

    con, views = connect(_catalog_root(args.catalog))
    if args.command and args.query:
        err_console.print("give the query once: as the argument after the catalog, or with -c")
        return EXIT_BAD_RECIPE  # argparse also exits 2 on usage errors
    args.command = args.command or args.query
    if not args.command:
        err_console.print(f"views: {', '.join(views) or '(none yet)'}; end a query with ';', Ctrl-D to quit")
        buffer = ""
        while True:
            try:
                line = input("curate> " if not buffer else "   ...> ")
            except EOFError:
                return EXIT_OK
            buffer += line + "\n"
            if buffer.strip().endswith(";"):
                try:
                    print_result(con.sql(buffer), args.format)
                except duckdb.Error as exc:
                    err_console.print(f"[red]{exc}[/red]", highlight=False)
                buffer = ""
    try:
        print_result(con.sql(args.command), args.format)
    except duckdb.Error as exc:
        err_console.print(f"[red]{exc}[/red]\nviews: {', '.join(views)}", highlight=False)
        return EXIT_ERRORS
    return EXIT_OK


def cmd_status(args) -> int:
    from rich.table import Table

    from .catalog import Catalog
    from .run.summary import STATUSES

    catalog = Catalog(_catalog_root(args.catalog))
    runs = catalog.runs()
    last = runs[-1] if runs else {}
    table = Table(title=f"catalog {catalog.root}", title_justify="left")
    for col in ("stage", "fingerprint", "done", "pending", *STATUSES, "top reason codes"):
        table.add_column(col, justify="left" if col in ("stage", "fingerprint", "top reason codes") else "right")
    n_shards = (last.get("recipe") or {}).get("shards")
    from .stages import STAGES

    order = list(STAGES)
    for stage in sorted(catalog.stages(), key=lambda s: order.index(s) if s in order else len(order)):
        sd = catalog.latest(stage)
        if sd is None:
            continue
        meta = json.loads((sd.path / "stage.json").read_text())
        total = meta.get("shards", n_shards) or 0
        counts: dict = {}
        codes: dict = {}  # every filter's reason codes, e.g. quality.lm_loss_high
        done = 0
        for s in range(total):
            marker = sd.marker(s)
            if marker:
                done += 1
                for k, v in marker.get("counts", {}).items():
                    counts[k] = counts.get(k, 0) + v
                for k, v in marker.get("error_codes", {}).items():
                    codes[k] = codes.get(k, 0) + v
        top = ", ".join(f"{c}×{n}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1])[:3]) or "-"
        table.add_row(stage, sd.fingerprint, str(done), str(total - done), *[str(counts.get(k, 0)) for k in STATUSES],
                      top)
    console.print(table)
    if last:
        console.print(f"last run {last.get('run_id')}: {last.get('status')} (started {last.get('started_at')})")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo.run import run_demo

    return run_demo(port=args.port, recipe=args.recipe, console=console)


def cmd_demo_serve(args) -> int:
    from .demo.site import serve_forever

    serve_forever(directory=args.directory, port=args.port)
    return EXIT_OK


def cmd_llm_serve(args) -> int:
    from .llm.server import serve

    return serve(host=args.host, port=args.port, n_threads=args.threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Build and curate video-LLM training data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("run", help="run a recipe (resumes where an earlier run stopped)")
    p.add_argument("recipe")
    p.add_argument("--ray-address", default=None, help='Ray cluster address ("auto", host:port, ray://host:10001)')
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

    p = sub.add_parser("demo", help="serve the demo site on loopback, run the demo recipe, show a query")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--recipe", default=None, help="recipe to run against the demo site (default: the demo recipe)")
    p.set_defaults(fn=cmd_demo)
    demo_sub = p.add_subparsers(dest="demo_command")
    s = demo_sub.add_parser("serve", help="only serve the demo site until Ctrl-C")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--directory", default=None, help="folder of videos to serve (default: the bundled demo corpus)")
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
