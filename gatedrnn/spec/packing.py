"""Which configurations are packed together, and how many (DESIGN.md, "Packs").

The one place that decides pack sizes: :func:`plan_packs` gives a worker its
:class:`PackPlan` (members per pack, and which configurations it packs at all), and
:func:`pack_chunk` the members per batched computation inside a pack. No torch here: a plan
depends only on the device's kind, ``--pack``, the number of workers and the configurations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .config import RNNConfig

__all__ = ["pack_group", "PackPlan", "plan_packs", "pack_chunk", "DEFAULT_PACK", "CPU_PACK_MAX_STATE"]

# Members per pack when --pack is not given: a whole group (the default grid's groups hold 48
# or 96 configurations) where packing is faster: on CUDA always (a step's cost is its launches),
# on the CPU for states up to 64 wide (benchmarks/bench_pack.py: packs of state 32 ran 1.2-1.7x
# faster than solo runs, those of state 256 at 0.6-0.8x of their speed); never on other
# devices, where it was never measured.
DEFAULT_PACK = 96
CPU_PACK_MAX_STATE = 64


def pack_group(config: RNNConfig) -> tuple | None:
    """The key shared by configurations that may be packed together, or None for one that is
    always trained alone (other cells, truncated BPTT, memory tasks). The input map's key is
    part of it, as it changes the parameters' shapes (a bias or none)."""
    if config.cell != "gated" or config.bptt != 1 or config.task != "bytes":
        return None
    if config.input_init is not None:
        return ("gated", config.n_layers, config.state_size, config.input_init)
    return ("gated", config.n_layers, config.state_size)


@dataclass(frozen=True)
class PackPlan:
    """How a worker packs: up to ``limit`` members per pack (1: never), and :meth:`group` says
    which pack group a configuration belongs to (None: trained alone)."""

    limit: int
    device_type: str
    chosen: bool  # --pack was given: every packable configuration is packed

    def group(self, config: Mapping[str, Any]) -> tuple | None:
        try:
            c = RNNConfig.from_dict(config)
        except (TypeError, ValueError, KeyError):
            return None
        key = pack_group(c)
        if key is not None and not self.chosen and self.device_type == "cpu" and c.state_size > CPU_PACK_MAX_STATE:
            return None
        return key


def plan_packs(option: int | None, device_type: str, workers: int = 1,
               configs: Iterable[Mapping[str, Any]] = ()) -> PackPlan:
    """The pack plan: ``--pack`` when given; else the device's default, shrunk when several
    workers share the sweep so that its largest group is split among all of them (each takes a
    pack of ceil(group / workers)) rather than trained by one while the others wait."""
    if option is not None:
        return PackPlan(option, device_type, True)
    default = DEFAULT_PACK if device_type in ("cuda", "cpu") else 1
    plan = PackPlan(default, device_type, False)
    if workers <= 1 or default <= 1:
        return plan
    sizes: dict[tuple, int] = {}
    for config in configs:
        key = plan.group(config)
        if key is not None:
            sizes[key] = sizes.get(key, 0) + 1
    if not sizes:
        return plan
    return PackPlan(max(2, min(default, -(-max(sizes.values()) // workers))), device_type, False)


def pack_chunk(device_type: str, state_size: int, batch_size: int) -> int | None:
    """Members per batched computation of a pack: all of them on a GPU (fewest launches); on
    the CPU a few, each chunk with the layout of its own members' switches, which wastes less
    arithmetic on gates its members do not have (benchmarks/bench_pack.py: 6 members at state
    32 and 2 at state 256, batch 256, were the fastest of 1 to 16 on a 2-core machine)."""
    if device_type != "cpu":
        return None
    return max(2, min(8, 49152 // (state_size * batch_size)))
