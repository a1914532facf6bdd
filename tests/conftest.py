import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# keep the suite predictable on a 2-core machine
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small corpus file made by the test: repeated English-like text."""
    from gatedrnn.data.corpus import builtin_bytes

    path = tmp_path / "tiny.txt"
    path.write_bytes(builtin_bytes()[:60_000])
    return path


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """A finished sweep of A and B, C pending with a checkpoint and a stale claim (tests/helpers.py)."""
    from helpers import make_sweep

    return make_sweep(tmp_path_factory.mktemp("sweep"))


def pytest_collection_modifyitems(config, items):
    """The Slurm tests first: they spend minutes waiting on slurmctld's timers, so that with
    ``-n 2 --dist loadgroup`` one xdist worker waits on them while the other runs the rest,
    instead of the suite ending on them."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
