"""The machine a run uses: the torch device of ``--device``, what it holds, what a run used.

Kept apart from the training code so that the launcher can check a device (and refuse settings
that cannot fit it) before anything is claimed. torch is imported only where a device other
than the CPU is asked about, so the launcher of a CPU sweep starts without it.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..spec.config import TrainSettings

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "device_type", "device_memory", "check_fits", "peak_memory_mb", "versions",
           "synchronize"]


def device_type(name: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for ``--device`` (ValueError when this machine does not have
    it); the CPU without importing torch."""
    return "cpu" if name == "cpu" else resolve_device(name).type


def resolve_device(name: str) -> "torch.device":
    """The torch device of ``--device``; ValueError when this machine does not have it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but torch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} was asked for but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} was asked for but this machine has no usable MPS device")
    return device


def device_memory(device: Any) -> int | None:
    """Bytes of memory the device (a torch device, or ``cpu``) has in all (the machine's RAM for
    the CPU), or None if unknown."""
    try:
        if getattr(device, "type", device) == "cuda":
            import torch

            return int(torch.cuda.mem_get_info(device)[1])
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def check_fits(settings: TrainSettings, device: Any) -> None:
    """Refuse settings whose data alone cannot fit the device: a window of (history + 1) x
    batch_size bytes as int64, and the validation streams (ValueError naming both)."""
    need = 8 * (settings.history + 1) * (settings.batch_size + settings.val_streams)
    have = device_memory(device)
    if have is not None and need > have:
        raise ValueError(
            f"--batch-size {settings.batch_size} with --history {settings.history}: one window of data needs "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of {device}")


def versions() -> dict[str, str]:
    """The software a result was computed with."""
    import numpy as np
    import torch

    return {"gatedrnn": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def peak_memory_mb(device: "torch.device") -> tuple[float, str]:
    """The run's peak memory in MB and what was measured."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "process peak RSS"


def synchronize(device: "torch.device") -> None:
    """Wait for the device's queued work (for timings)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
