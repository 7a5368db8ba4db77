"""`curate view`: the catalog in a browser (curate/view/), given a catalog folder, a
recipe, or a release folder (then that release's splits are shown)."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from ..console import EXIT_BAD_RECIPE, EXIT_INTERRUPTED, console, err_console, styled
from .catalog_commands import catalog_root


def _target(arg: str) -> tuple[Path, str | None]:
    """(catalog root, release name or None)."""
    from ..catalog.storage import is_object_url

    if is_object_url(arg):
        err_console.print(styled("curate view reads a local catalog", "red",
                                 f": {arg} is object storage (query it with `curate sql`, or copy it here)"))
        raise SystemExit(EXIT_BAD_RECIPE)
    path = Path(arg)
    if path.is_dir() and (path / "manifest.json").is_file() and path.parent.name == "releases":
        return path.parent.parent, path.name
    return catalog_root(arg), None


def cmd_view(args) -> int:
    from ..view.serve import is_loopback, serve

    root, release = _target(args.catalog)
    release = args.release or release
    if release and not (root / "releases" / release / "manifest.json").is_file():
        err_console.print(styled(f"no release {release!r} in {root}", "red", " (its releases/ folder has no such "
                                                                          "version)"))
        return EXIT_BAD_RECIPE
    reviewer = args.reviewer or os.environ.get("CURATE_REVIEWER") or getpass.getuser()

    def announce(url: str) -> None:
        console.print(f"curate view: {url}", highlight=False, soft_wrap=True)
        if not is_loopback(args.host):
            console.print(styled(f"served on {args.host}: anyone who can reach it needs the token above", "yellow"),
                          highlight=False)
        console.print(f"catalog {root}{f', release {release}' if release else ''}; reviews by {reviewer}; "
                      "Ctrl-C to stop", highlight=False, soft_wrap=True)

    try:
        serve(root, args.host, args.port, release, reviewer, announce)
    except OSError as exc:  # the port is taken, or the host is not this machine's
        err_console.print(styled(f"cannot serve on {args.host}:{args.port}", "red", f": {exc.strerror or exc}"
                                 " (pick another --port)"), highlight=False)
        return EXIT_BAD_RECIPE
    except KeyboardInterrupt:
        pass
    console.print("curate view stopped")
    return EXIT_INTERRUPTED
