"""`curate sql`, `status` and `verify`: the commands given a catalog (a folder, an
object URL, or a recipe whose catalog is meant)."""

from __future__ import annotations

from pathlib import Path

from ..console import EXIT_BAD_RECIPE, EXIT_ERRORS, EXIT_OK, console, err_console, print_result, styled
from .recipe_commands import load_recipe_or_exit


def catalog_root(arg: str) -> Path:
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
        return load_recipe_or_exit(arg).catalog
    if not path.is_dir():
        err_console.print(styled(f"no catalog at {path}", "red", " (give a catalog folder or a recipe)"))
        raise SystemExit(EXIT_BAD_RECIPE)
    return path


def cmd_sql(args) -> int:
    import duckdb

    from ..catalog.views import open_catalog
    from .sql_errors import error_line

    opened = open_catalog(catalog_root(args.catalog), lazy=True)  # views made as queries name them
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

    catalog = Catalog(catalog_root(args.catalog))
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

    if (Path(args.catalog) / "manifest.json").is_file():  # a release folder
        return _verify_release(Path(args.catalog))
    catalog = Catalog(catalog_root(args.catalog))
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


def _verify_release(release: Path) -> int:
    from ..release.verify import verify_release

    checked, problems = verify_release(release)
    for problem in problems:
        console.print(problem, highlight=False)
    console.print(f"{checked} release file(s) checked against their manifests, {len(problems)} problem(s)",
                  highlight=False)
    return EXIT_ERRORS if problems else EXIT_OK


def cmd_diff(args) -> int:
    import json

    from ..release import diff

    root = catalog_root(args.catalog)
    folders = [root / "releases" / name for name in (args.old, args.new)]
    for folder in folders:
        if not (folder / "manifest.json").is_file():
            err_console.print(styled(f"no release {folder.name!r} in {root}", "red", " (its releases/ folder has "
                                     "no such version)"), highlight=False)
            return EXIT_BAD_RECIPE
    doc = diff.between(*folders)
    if args.json:
        console.print_json(json.dumps(doc, default=str))
    else:
        console.print("\n".join(diff.card_section(doc, None)), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK
