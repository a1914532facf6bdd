"""``python -m gatedrnn COMMAND ...``: the same as the ``gatedrnn`` command."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
