"""``python -m curate.cli``: the `curate` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
