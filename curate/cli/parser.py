"""The `curate` command line: its arguments, and ``main``, which runs the command they name
(recipe_commands.py, catalog_commands.py, demo_commands.py)."""

from __future__ import annotations

import argparse
import logging

from ..console import EXIT_INTERRUPTED, err_console
from .catalog_commands import cmd_diff, cmd_sql, cmd_status, cmd_verify
from .demo_commands import cmd_demo, cmd_demo_serve, cmd_llm_serve
from .recipe_commands import cmd_check, cmd_release, cmd_run, cmd_validate, cmd_value
from .view_commands import cmd_view


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

    p = sub.add_parser("verify", help="re-hash every shard against its completion marker (or a release's files "
                                      "against its manifest)")
    p.add_argument("catalog", help="catalog folder (or its recipe), or a release folder")
    p.add_argument("--repair", action="store_true", help="remove the markers of mismatched shards (a run redoes them)")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("diff", help="what release NEW changed against OLD: clips added and removed (and why), "
                                    "splits, annotations, funnel, validation")
    p.add_argument("catalog", help="catalog folder (or its recipe)")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--json", action="store_true", help="the whole diff as JSON (every clip, as diff.json holds it)")
    p.set_defaults(fn=cmd_diff)

    p = sub.add_parser("view", help="look at a catalog in the browser: funnel, clips, one clip with its video and "
                                    "words, failures; review clips (keep/reject)")
    p.add_argument("catalog", help="catalog folder, its recipe, or a release folder (its splits are shown)")
    p.add_argument("--port", type=int, default=8766, help="port (default 8766; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default loopback; any other "
                                                       "needs the printed token)")
    p.add_argument("--release", default=None, help="the release whose splits the clips show (default: the newest)")
    p.add_argument("--reviewer", default=None, help="name stored with each review (default: $CURATE_REVIEWER, "
                                                    "else the login name)")
    p.set_defaults(fn=cmd_view)

    for name, text in (("release", "build the next release of the recipe's catalog (tables, exports, card)"),
                       ("qa", "run qa_checks/ over the recipe's current tables (the release gate, alone)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("recipe")
        if name == "release":
            p.add_argument("--version", default=None, help="version name (default: the next vN)")
            p.add_argument("--only-reviewed", action="store_true", help="release only clips a curator kept in "
                           "`curate view` (release.review.only_reviewed)")
        p.set_defaults(fn=cmd_release, fn_name=name)

    p = sub.add_parser("validate", help="train the reference model on a release: do its frames teach its words?")
    p.add_argument("release", help="a release folder, or a recipe (its latest release, or --version)")
    p.add_argument("--version", default=None, help="the recipe's release to validate (default: the newest)")
    p.add_argument("--out", default=None, help="write here instead of <release>/validation/<run>/ (and leave "
                                               "validation/latest.json as it is)")
    p.add_argument("--steps", type=int, default=None, help="override validate.steps")
    p.add_argument("--controls", action="store_true", help="also validate two negative controls built from the "
                                                           "release (frames of another video; words of another "
                                                           "clip) and say whether its gains sit above theirs")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("value", help="score every clip of a release with reference models that never trained on "
                                     "it (cross-fitted): which clips' frames do not help, which words are unlearnable")
    p.add_argument("release", help="a release folder, or a recipe (its latest release, or --version)")
    p.add_argument("--version", default=None, help="the recipe's release to score (default: the newest)")
    p.add_argument("--steps", type=int, default=None, help="override validate.steps")
    p.add_argument("--folds", type=int, default=None, help="override validate.value_folds")
    p.set_defaults(fn=cmd_value)

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
