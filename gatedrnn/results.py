"""``gatedrnn.results``: the public name of the results loader (DESIGN.md, "Public API"); the module
itself is :mod:`gatedrnn.analysis.results`."""

from .analysis.results import *  # noqa: F401,F403
from .analysis.results import __all__  # noqa: F401
