"""A pack (DESIGN.md, "Packs"): K configurations of one group trained as one batched step.

:class:`PackRun` is a sibling of :class:`gatedrnn.training.run.Run` over the one loop
(:class:`gatedrnn.training.loop.Loop`), with :class:`gatedrnn.training.rules.PackedRule` as its update rule and
:class:`gatedrnn.models.packed.PackedModel` as its model. Each member trains exactly its own model:
its solo run's initial weights (:func:`gatedrnn.training.loop.seeded_model`), its own data stream (one
per distinct seed), the same procedure. The moving average, the curves and divergence are per
member. The pack's checkpoint holds each member's state in a solo run's format
(:class:`gatedrnn.training.checkpoints.RunState`), so a member can also be finished alone, and each
member's result record is built by its solo :class:`~gatedrnn.training.run.Run` from that state.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import checkpoints
from ..models.fast import backward_kernels as manual_backward_available
from .checkpoints import CheckpointMismatch, RunState
from ..spec.config import SWITCH_LETTERS, SWITCHES, RNNConfig, TrainSettings
from ..data.corpus import Corpus, load_corpus
from ..store.folder import pack_id_of
from .loop import MA_START, Loop, seeded_model
from ..models.packed import PackError, PackedModel
from ..spec.packing import pack_chunk
from .rules import PackedRule, make_optimizer
from .run import Run
from ..data.sources import ByteSource

__all__ = ["PackRun"]


class PackRun(Loop):
    """The complete state of a pack (see the module's docstring)."""

    def __init__(self, configs: list[RNNConfig], settings: TrainSettings, corpus: Corpus | None = None,
                 pack_id: str | None = None, chunk: int | None = None) -> None:
        """``chunk``: members per batched computation (:class:`PackedModel`); None: the
        device's default (:func:`gatedrnn.spec.packing.pack_chunk`). The members are kept in the order
        of their switches, so that a chunk's members mostly agree and need fewer masks."""
        if not manual_backward_available():
            raise PackError("packed training needs this torch's private backward kernels (see gatedrnn/_fast.py)")
        ids = [c.id for c in configs]
        if len(set(ids)) != len(ids):
            raise PackError("a pack lists a configuration twice")
        self.configs = sorted(configs, key=lambda c: tuple(not getattr(c, name) for name in SWITCHES))
        self.k = len(configs)
        self.pack_id = pack_id or pack_id_of(ids)
        # packs are next-byte prediction only (gatedrnn.models.packed.pack_group)
        self._set_up(settings, ByteSource(corpus if corpus is not None else load_corpus(settings.data),
                                          settings.history, settings.split))
        self.seeds = [c.seed if c.seed is not None else settings.seed for c in self.configs]
        self.chunk = chunk if chunk is not None else pack_chunk(self.device.type, self.configs[0].state_size,
                                                                 settings.batch_size)
        self.model = PackedModel(self.configs, device=self.device, chunk=self.chunk, input_init=settings.input_init)
        for k, (config, seed) in enumerate(zip(self.configs, self.seeds)):
            self.model.load_member(k, seeded_model(config, seed, settings.input_init).state_dict())
        self.flat = self.model.flat
        # each member's learning rate (a swept lr overrides the setting); where they differ, one
        # Adam step with a rate per element of the stacked parameters
        self.lrs = [c.lr if c.lr is not None else settings.lr for c in self.configs]
        self.optimizer = make_optimizer(self.flat, self.lrs[0], self.device)
        self.rule = PackedRule(self.model, self.optimizer, self._lr_per_element() if len(set(self.lrs)) > 1 else None)
        # one data stream per distinct seed; members of one seed read the same bytes
        data_seeds = sorted(set(self.seeds))
        self.member_stream = [data_seeds.index(seed) for seed in self.seeds]
        self.samplers = [self.source.sampler(settings.batch_size, 2 * seed + 1, self.device) for seed in data_seeds]
        self._member_stream = torch.tensor(self.member_stream, device=self.device)
        self.heldout = self.source.heldout(settings.val_streams, self.device)
        self.offsets: list[torch.Tensor] | None = None
        self.states = self.model.initial_state(settings.batch_size)
        self.ma = torch.full((self.k,), MA_START, device=self.device)
        self.curve_start: int | None = None
        self.curves: list[list[float]] = [[] for _ in configs]
        self.val_curves: list[list[list[float]]] = [[] for _ in configs]
        self.last_eval: int | None = None
        self.base_seconds = [0.0] * self.k  # each member's at the last load, and the pack's then
        self._seconds_at_load = 0.0
        self.start_times = [time.time()] * self.k
        self.member_resumes = [0] * self.k
        self.member_diverged: list[int | None] = [None] * self.k
        self.member_problems: list[list[str]] = [[] for _ in configs]
        self.checkpoint_problems: list[str] = []

    def _lr_per_element(self) -> torch.Tensor:
        lr = torch.zeros_like(self.flat)
        with torch.no_grad():
            for k, rate in enumerate(self.lrs):
                solo = self.model.member_flat(k, self.flat)
                self.model.load_member_flat(k, lr, torch.full_like(solo, rate))
        return lr

    @property
    def diverged_at(self) -> int | None:
        """The step at which the last member diverged, once every member has; else None."""
        if all(d is not None for d in self.member_diverged):
            return max(self.member_diverged)
        return None

    @property
    def curve(self) -> list[float]:  # what progress reports show: the first live member's curve
        live = [c for c, d in zip(self.curves, self.member_diverged) if d is None]
        return live[0] if live else self.curves[0]

    @property
    def resumes(self) -> int:
        return max(self.member_resumes)

    # ---------------------------------------------------------------- the loop's parts
    def _new_window(self) -> None:
        self.offsets = [sampler.next_offsets() for sampler in self.samplers]
        self._set_window([sampler.window(o) for sampler, o in zip(self.samplers, self.offsets)])
        self.states = self.model.initial_state(self.settings.batch_size)

    def _set_window(self, windows: list[torch.Tensor]) -> None:
        if len(windows) == 1:  # (history + 1, N): every member reads the same bytes
            self._use_window(windows[0])
        else:  # (history + 1, K, N)
            self._use_window(torch.stack(windows, dim=1).index_select(1, self._member_stream))

    def _record_point(self) -> bool:
        for k, value in enumerate(self.ma.tolist()):
            if self.member_diverged[k] is not None:
                continue
            if math.isfinite(value):
                if self.curve_start is None:
                    self.curve_start = self.step
                self.curves[k].append(value)
            else:
                self.member_diverged[k] = self.step
        return self.diverged_at is None

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """Each member's validation loss (nats per byte), all members in one batched pass."""
        return self.heldout.evaluate(self.model)[0]

    def record_evaluation(self) -> None:
        for k, value in enumerate(self.evaluate()):
            if self.member_diverged[k] is None:
                self.val_curves[k].append([self.step, value])
        self.last_eval = self.step

    def evaluated_now(self) -> bool:
        return self.last_eval == self.step

    # ---------------------------------------------------------------- checkpoint
    def member_state(self, k: int) -> RunState:
        """Member ``k``'s state, as its solo run's checkpoint holds it."""
        group = {key: value for key, value in self.optimizer.param_groups[0].items() if key != "params"}
        opt_state = self.optimizer.state.get(self.flat)
        state = {}
        if opt_state:
            state[0] = {"step": opt_state["step"].detach().cpu().clone(),
                        "exp_avg": self.model.member_flat(k, opt_state["exp_avg"]),
                        "exp_avg_sq": self.model.member_flat(k, opt_state["exp_avg_sq"])}
        u = self.member_stream[k]
        return RunState(
            config=self.configs[k].to_dict(with_id=True), settings=self.settings.to_dict(),
            dataset=self.source.name, dataset_sha256=self.source.sha256, model=self.model.member_state(k),
            optimizer={"state": state, "param_groups": [{**group, "lr": self.lrs[k], "params": [0]}]}, ridge=None,
            step=self.step,
            updates=self.updates, pos=self.pos,
            offsets=None if self.offsets is None or self.window is None else self.offsets[u].cpu(),
            states=[s[k].cpu() for s in self.states], ma=self.ma[k].cpu().clone(), ma_started=True,
            curve=list(self.curves[k]), curve_start=self.curve_start,
            val_curve=[list(p) for p in self.val_curves[k]], val_metrics=None,
            sampler=self.samplers[u].state_dict(), rng=checkpoints.rng_state(self.device),
            train_seconds=self.base_seconds[k] + self.train_seconds - self._seconds_at_load,
            start_time=self.start_times[k], resumes=self.member_resumes[k], diverged_at=self.member_diverged[k],
            problems=self.member_problems[k] + self.checkpoint_problems)

    def state_dict(self) -> dict[str, Any]:
        return checkpoints.pack_record(self.pack_id, self.step,
                                       {c.id: self.member_state(k) for k, c in enumerate(self.configs)})

    def save(self, path: str | Path) -> None:
        checkpoints.save(path, self.state_dict())

    def load_members(self, members: dict[str, RunState], where: str) -> None:
        """Continue from the states of every member (from this pack's checkpoint or an earlier
        pack's): they must be at one step, and members of one data seed at one data position;
        CheckpointMismatch otherwise."""
        missing = [c.id[:12] for c in self.configs if c.id not in members]
        if missing:
            raise CheckpointMismatch(f"{where}: no state for pack member(s) {', '.join(missing)}")
        states = [members[c.id] for c in self.configs]
        for state, config in zip(states, self.configs):
            state.check(config, self.settings, self.source.sha256, where)
        if len({(st.step, st.pos) for st in states}) != 1:
            raise CheckpointMismatch(f"{where}: the pack's members are at different steps")
        for u, sampler in enumerate(self.samplers):
            mine = [st for st, v in zip(states, self.member_stream) if v == u]
            gens = {bytes(st.sampler["generator"].numpy()) for st in mine}
            offs = {None if st.offsets is None else bytes(st.offsets.numpy()) for st in mine}
            if len(gens) != 1 or len(offs) != 1:
                raise CheckpointMismatch(f"{where}: members with one data seed are at different data positions")
            sampler.load_state_dict(mine[0].sampler)
        self._load_optimizer(states, where)
        first = states[0]
        # every step of a pack is one update of every member (packs saved before issue 21 recorded 0)
        self.step, self.pos, self.updates = first.step, first.pos, first.step
        self.curve_start = first.curve_start
        if first.offsets is None:
            self.offsets, self.window, self.inputs, self.targets = None, None, (), ()
        else:
            self.offsets = [next(st.offsets for st, v in zip(states, self.member_stream) if v == u)
                            for u in range(len(self.samplers))]
            self._set_window([sampler.window(o) for sampler, o in zip(self.samplers, self.offsets)])
        self.states = [torch.stack([st.states[layer] for st in states]).to(self.device)
                       for layer in range(self.model.n_layers)]
        self.ma = torch.stack([st.ma for st in states]).to(self.device)
        self.curves = [list(st.curve) for st in states]
        self.val_curves = [[list(p) for p in st.val_curve] for st in states]
        self.last_eval = None
        checkpoints.set_rng_state(first.rng, self.device)
        self.base_seconds = [st.train_seconds for st in states]
        self.train_seconds = self._seconds_at_load = max(self.base_seconds)
        self.start_times = [st.start_time for st in states]
        self.member_resumes = [st.resumes + 1 for st in states]
        self.member_diverged = [st.diverged_at for st in states]
        self.member_problems = [list(st.problems) for st in states]

    def _load_optimizer(self, states: list[RunState], where: str) -> None:
        """The members' weights and Adam moments into the stacked buffers (zero where no member is)."""
        opt = [st.optimizer["state"].get(0) for st in states]
        if any(o is not None for o in opt):
            if any(o is None for o in opt) or len({float(o["step"]) for o in opt}) != 1:
                raise CheckpointMismatch(f"{where}: the members' optimizer states are at different steps")
            self.optimizer.state[self.flat] = {
                "step": opt[0]["step"].to(device=self.device, dtype=torch.float32).clone(),
                "exp_avg": torch.zeros_like(self.flat), "exp_avg_sq": torch.zeros_like(self.flat)}
        with torch.no_grad():
            self.flat.zero_()
            for k, st in enumerate(states):
                self.model.load_member(k, st.model)
                if opt[k] is not None:
                    for key in ("exp_avg", "exp_avg_sq"):
                        self.model.load_member_flat(k, self.optimizer.state[self.flat][key], opt[k][key])

    def restore(self, path: str | Path) -> bool:
        """Resume from the pack checkpoint ``path`` if it exists (an unreadable one is set aside
        and the pack starts from scratch: False)."""
        members = checkpoints.read_pack(path, self.checkpoint_problems)
        if members is None:
            return False
        self.load_members(members, str(path))
        return True

    # ---------------------------------------------------------------- results
    def member_run(self, k: int) -> Run:
        """Member ``k`` as a solo :class:`Run` in its current state (for its result and weights)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            run = Run(self.configs[k], self.settings, source=self.source)
            run.load(self.member_state(k), where=f"pack {self.pack_id[:12]}")
        run.resumes = self.member_resumes[k]
        return run

    def results(self, weights: Callable[[str], str | Path] | None = None) -> dict[str, dict[str, Any]]:
        """Each member's result record, with its pack, by configuration id; ``weights(id)``
        names each member's weights file (written atomically), or None for none."""
        out = {}
        union = "".join(letter for letter, name in zip(SWITCH_LETTERS, SWITCHES) if self.model.union[name])
        for k, config in enumerate(self.configs):
            run = self.member_run(k)
            result = run.result()
            result["pack"] = {"id": self.pack_id, "size": self.k, "index": k, "union": union,
                              "peak memory MB per member": result["peak memory MB"] / self.k}
            if weights is not None:
                path = weights(config.id)
                run.save_weights(path)
                result["weights file"] = Path(path).name
            out[config.id] = result
        return out
