"""The only owner of the ``.pt`` formats (DESIGN.md, "The results folder"; STYLE.md 16).

* A run's checkpoint: everything needed to continue as if never stopped (model, optimizer,
  step, the moving average and the curves so far, every random generator, the data cursor),
  with the configuration, the settings and the data's identity. :class:`RunState` is its one
  builder (:meth:`RunState.to_dict`) and its one reader (:meth:`RunState.from_dict`, which
  also fills in what older checkpoints lack); :meth:`RunState.check` is the one compatibility
  check.
* A pack's checkpoint: ``{"format", "pack", "step", "members": {id: a run's checkpoint}}``,
  each member's state built by the same :class:`RunState`, so a member can be finished alone.
* Final weights: a safetensors file (:func:`save_weights`): the tensors, with the
  configuration, the settings, the data's identity, the step and the result's id as JSON in its
  metadata header, so that loading needs only the ``safetensors`` package and runs no code.
  :func:`read_weights` also reads the ``.pt`` weights written before (a plain dict for
  ``torch.load(weights_only=True)``).

Files are written atomically (:func:`save`). :func:`read_run` and :func:`read_pack` report a
file that cannot be read, set it aside by the results folder's rule
(:func:`gatedrnn.store.folder.set_aside`) and read it as missing: the run restarts from scratch.
:func:`load_file` is the one place a ``.pt`` file is unpickled; the tools read through it.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from ..spec.atomic import atomic_write_bytes
from ..spec.config import LEGACY_SETTINGS, RNNConfig, TrainSettings
from ..store.folder import set_aside

__all__ = ["RunState", "CheckpointMismatch", "CHECKPOINT_FORMAT", "PACK_FORMAT", "WEIGHTS_FORMAT", "RESUME_KEYS",
           "save", "load_file", "read_run", "read_pack", "pack_record", "weights_record", "save_weights", "read_weights",
           "rng_state", "set_rng_state", "kind_of"]

CHECKPOINT_FORMAT = 1
PACK_FORMAT = "gatedrnn pack 1"
WEIGHTS_FORMAT = "gatedrnn weights 1"  # the .pt weights written before safetensors
SAFETENSORS_FORMAT = "gatedrnn weights 2"
# Settings that change what a run computes; a checkpoint made under other values is refused.
RESUME_KEYS = ("steps", "batch_size", "history", "lr", "log_every", "eval_every", "seed", "val_streams", "split",
               "input_init")


class CheckpointMismatch(ValueError):
    """A checkpoint made with other settings, configuration or data than this run's."""


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global random generators a run draws from (the CPU's, and the device's on CUDA)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


# the checkpoint's key of each RunState field (the format written since the first version)
_KEYS = {"dataset_sha256": "dataset sha256", "ma_started": "ma started", "curve_start": "curve start",
         "val_curve": "val curve", "val_metrics": "val metrics", "train_seconds": "train seconds",
         "start_time": "start time", "diverged_at": "diverged at", "problems": "checkpoint problems"}


@dataclass
class RunState:
    """One run's state at a step, as its checkpoint holds it."""

    config: dict[str, Any]
    settings: dict[str, Any]
    dataset: str
    dataset_sha256: str
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    ridge: dict[str, Any] | None
    step: int
    updates: int  # optimizer updates (one per step without BPTT)
    pos: int  # position in the current window
    offsets: torch.Tensor | None  # the current window's, None between windows
    states: list[torch.Tensor]  # each layer's state
    ma: torch.Tensor
    ma_started: bool
    curve: list[float]
    curve_start: int | None
    val_curve: list[list[float]]
    val_metrics: dict[str, float] | None
    sampler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    train_seconds: float
    start_time: float
    resumes: int
    diverged_at: int | None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint (the one builder of a run's checkpoint, solo or a pack's member)."""
        out: dict[str, Any] = {"format": CHECKPOINT_FORMAT}
        for f in fields(self):
            out[_KEYS.get(f.name, f.name)] = getattr(self, f.name)
        return out

    @classmethod
    def from_dict(cls, state: Any, where: str) -> "RunState":
        """The state in a checkpoint (the one reader); CheckpointMismatch when it is not one.
        Older checkpoints lack a few keys: ``updates`` (one per step at bptt 1), ``ma started``
        (always started), ``val metrics``, ``curve start``."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointMismatch(f"{where}: checkpoint format {got!r}, expected {CHECKPOINT_FORMAT}")
        defaults = {"updates": state.get("step"), "ma started": True, "val metrics": None, "curve start": None,
                    "checkpoint problems": []}
        try:
            values = {f.name: state[key] if key in state else defaults[key]
                      for f in fields(cls) for key in [_KEYS.get(f.name, f.name)]}
        except KeyError as e:
            raise CheckpointMismatch(f"{where}: the checkpoint has no {e.args[0]!r}") from None
        return cls(**values)

    def check(self, config: RNNConfig, settings: TrainSettings, sha256: str, where: str) -> None:
        """CheckpointMismatch unless this is a state of ``config`` under these settings and data."""
        if self.config.get("id") != config.id:
            raise CheckpointMismatch(f"{where}: checkpoint is for configuration {self.config.get('id')}, not {config.id}")
        mine = settings.to_dict()
        theirs = {**LEGACY_SETTINGS, **self.settings}  # made before the split rule: the whole held-out
        for key in RESUME_KEYS:
            if theirs.get(key) != mine[key]:
                raise CheckpointMismatch(
                    f"{where}: the checkpoint was made with {key}={theirs.get(key)!r} but this run has "
                    f"{key}={mine[key]!r}; rerun with the original value, or delete the checkpoint to start over")
        if self.dataset_sha256 != sha256:
            raise CheckpointMismatch(
                f"{where}: the checkpoint was trained on another corpus (sha256 {self.dataset_sha256[:12]}…, "
                f"this run's is {sha256[:12]}…)")


def pack_record(pack_id: str, step: int, members: Mapping[str, RunState]) -> dict[str, Any]:
    """A pack's checkpoint: each member's state as a run's checkpoint."""
    return {"format": PACK_FORMAT, "pack": pack_id, "step": step,
            "members": {cid: state.to_dict() for cid, state in members.items()}}


def weights_record(config: RNNConfig, settings: TrainSettings, dataset: str, sha256: str, step: int,
                   model: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The final weights with what they are (no pickled code: ``weights_only`` loads it)."""
    return {"format": WEIGHTS_FORMAT, "config": config.to_dict(with_id=True), "settings": settings.to_dict(),
            "dataset": dataset, "dataset sha256": sha256, "step": step,
            "model": {k: v.detach().cpu().clone() for k, v in model.items()}}


def save_weights(path: str | Path, record: Mapping[str, Any], result_id: str) -> None:
    """Write :func:`weights_record` as a safetensors file, atomically: the tensors, and every other
    field (JSON) in the metadata header, with the result's id."""
    from safetensors.torch import save as to_bytes

    meta = {"format": SAFETENSORS_FORMAT, "id": result_id,
            **{k: json.dumps(v) for k, v in record.items() if k not in ("format", "model")}}
    atomic_write_bytes(path, to_bytes({k: v.contiguous() for k, v in record["model"].items()}, metadata=meta))


def read_weights(path: str | Path) -> dict[str, Any]:
    """A weights file (``.safetensors``, or the ``.pt`` of earlier versions) as
    :func:`weights_record`'s dict; ValueError when it is not one."""
    path = Path(path)
    if path.suffix != ".safetensors":
        state = load_file(path)
        if kind_of(state) != "weights":
            raise ValueError(f"{path}: not a gatedrnn weights file")
        return state
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != SAFETENSORS_FORMAT:
            raise ValueError(f"{path}: not a gatedrnn weights file (format {meta.get('format')!r})")
        model = {k: f.get_tensor(k) for k in f.keys()}
    record = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "id")}
    return {**record, "format": WEIGHTS_FORMAT, "id": meta.get("id"), "model": model}


def save(path: str | Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically. Serialised in memory first: torch.save on a full
    disk raises an opaque RuntimeError, a plain write an OSError that names the cause (ENOSPC),
    which the worker recognises as a fault of the machine."""
    buffer = io.BytesIO()
    torch.save(dict(record), buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_file(path: str | Path) -> Any:
    """The object in a ``.pt`` file, loaded with ``weights_only`` (no code runs) onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def kind_of(state: Any) -> str | None:
    """``checkpoint``, ``pack checkpoint`` or ``weights`` for a loaded file of ours, else None."""
    if not isinstance(state, dict):
        return None
    if state.get("format") == CHECKPOINT_FORMAT:
        return "checkpoint"
    if state.get("format") == PACK_FORMAT and isinstance(state.get("members"), dict):
        return "pack checkpoint"
    if state.get("format") == WEIGHTS_FORMAT:
        return "weights"
    return None


def _read(path: str | Path, kind: str, problems: list[str] | None) -> dict[str, Any] | None:
    """The dict of ``kind`` in ``path`` (None when missing). One that cannot be read or is not
    of that kind is reported (a warning, and into ``problems``), set aside and read as missing."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = load_file(path)
        # a run's checkpoint of another format version is refused by RunState.from_dict, not set aside
        ours = isinstance(state, dict) and ("format" in state if kind == "checkpoint" else kind_of(state) == kind)
        if not ours:
            raise ValueError(f"not a gatedrnn {kind}")
    except Exception as e:  # truncated, garbage, wrong pickle: all mean "cannot resume"
        detail = (str(e).strip().splitlines() or ["empty or truncated file"])[0][:200]
        problem = f"{path}: unreadable {kind} ({e.__class__.__name__}: {detail}); restarting from scratch"
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        if problems is not None:
            problems.append(problem)
        try:
            set_aside(path)
        except OSError:
            pass
        return None
    return state


def read_run(path: str | Path, problems: list[str] | None = None) -> RunState | None:
    """A run's checkpoint, or None when it is missing or unreadable (then set aside)."""
    state = _read(path, "checkpoint", problems)
    return None if state is None else RunState.from_dict(state, str(path))


def read_pack(path: str | Path, problems: list[str] | None = None) -> dict[str, RunState] | None:
    """A pack's checkpoint as each member's state by configuration id, or None when it is
    missing or unreadable (then set aside)."""
    state = _read(path, "pack checkpoint", problems)
    if state is None:
        return None
    return {cid: RunState.from_dict(member, f"{path}: member {cid[:12]}") for cid, member in state["members"].items()}
