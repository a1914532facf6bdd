"""What a sweep found (no torch): a results folder as a table (``results``), replicates and
intervals (``stats``), matched-pair effects, interactions and variance shares (``effects``), each
configuration at its own learning rate (``tuning``), the n-gram references (``references``), the
rungs of successive halving (``rungs``), the figures (``plots``), summary.md (``report``) and the
steps of ``examine`` in order (``examine``).

Above ``data`` (the corpora's n-grams), ``store`` and ``spec``; beside ``training``, which it never
imports. See DESIGN.md, "Replicates and effects".
"""

from .examine import METRICS, examine, filtered_name  # noqa: F401  (the analysis's entry point)
from .plots import plot_hyperparameters  # noqa: F401
from .stats import linear_model  # noqa: F401

__all__ = ["examine", "filtered_name", "METRICS", "plot_hyperparameters", "linear_model"]
