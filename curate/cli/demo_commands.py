"""`curate demo`, `curate demo serve` and `curate llm serve`: the bundled demo and its local LLM."""

from __future__ import annotations

from ..console import EXIT_BAD_RECIPE, EXIT_OK, console, err_console


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
