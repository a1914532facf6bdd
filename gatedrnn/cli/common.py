"""What every command's parsing shares: the one-line error (exit 2) for bad input."""

from __future__ import annotations

import argparse
import math
import sys

__all__ = ["EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2


def _error(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and exit status 2), like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see --help)\n")


def _finite_float(text: str) -> float:
    """argparse type: a finite float (JSON, and every file we write, has no inf or nan)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


