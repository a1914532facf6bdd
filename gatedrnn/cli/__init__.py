"""The command line on top: every command's arguments (``main``; nothing else parses argv), and
the commands that look at a sweep without training: ``status``, ``inspect``, ``sample``
(``tools``) and ``export mlflow`` (``export``).

The top layer. See README.md and docs/.
"""

from .main import build_parser, main, train_options  # noqa: F401

__all__ = ["main", "build_parser", "train_options"]
