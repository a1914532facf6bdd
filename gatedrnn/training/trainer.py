"""The public entry points: :func:`train` (one configuration) and :func:`train_pack` (a pack).

Both make a run (:class:`gatedrnn.training.run.Run` or :class:`gatedrnn.training.pack_run.PackRun`), restore it
from its checkpoint where one exists (or from another saved state of it), drive it through the
one loop (:func:`gatedrnn.training.loop.drive`) with checkpoints and stops, and return result records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import checkpoints
from .checkpoints import CheckpointMismatch
from ..spec.config import RNNConfig, TrainSettings
from ..data.corpus import Corpus
from .devices import check_fits, resolve_device
from .loop import MA_DECAY, MA_START, Interrupted, Loop, drive
from .pack_run import PackRun
from .run import Run

__all__ = ["train", "train_pack", "Run", "PackRun", "Interrupted", "CheckpointMismatch", "resolve_device",
           "check_fits", "MA_START", "MA_DECAY"]


def _check_types(configs: list[Any], settings: Any) -> None:
    for config in configs:
        if not isinstance(config, RNNConfig):
            raise TypeError(f"a configuration must be an RNNConfig, got {type(config).__name__}")
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")


def _drive_and_save(run: Loop, checkpoint: str | Path | None, before_checkpoint: Callable[[], None] | None,
                    should_stop: Callable[[], bool] | None, on_progress: Callable[[Any], None] | None,
                    stop_at: int | None = None) -> None:
    def save() -> None:
        if checkpoint is not None:
            if before_checkpoint is not None:
                before_checkpoint()
            run.save(checkpoint)

    drive(run, save, should_stop, on_progress, stop_at)


def train(
    config: RNNConfig,
    settings: TrainSettings,
    *,
    checkpoint: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    on_progress: Callable[[Run], None] | None = None,
    corpus: Corpus | None = None,
    weights: str | Path | None = None,
    pack_checkpoint: str | Path | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train ``config`` under ``settings`` and return the result record.

    checkpoint: file to resume from (if it exists) and to save to every
        ``settings.checkpoint_every`` steps and when stopped.
    should_stop: polled after every step; when it returns True the run is checkpointed and
        :class:`Interrupted` is raised.
    before_checkpoint: called before each checkpoint write; it may raise to abort the run
        (the worker uses it to check that it still owns its claim).
    on_progress: called with the run at every log point.
    weights: file to write the final weights to (atomically), or None.
    pack_checkpoint: a pack's checkpoint holding this configuration, to resume from when
        ``checkpoint`` does not exist (a pack member finished alone).
    stop_at: a rung of successive halving: stop there (checkpointed) and return the record of
        the run at that step.
    """
    _check_types([config], settings)
    run = Run(config, settings, corpus)
    restored = checkpoint is not None and run.restore(checkpoint)
    if not restored and pack_checkpoint is not None:
        members = checkpoints.read_pack(pack_checkpoint, run.checkpoint_problems)
        if members is not None and config.id in members:
            run.load(members[config.id], where=str(pack_checkpoint))
    _drive_and_save(run, checkpoint, before_checkpoint, should_stop, on_progress, stop_at)
    result = run.result()
    if weights is not None:
        run.save_weights(weights)
        result["weights file"] = Path(weights).name
    return result


def train_pack(
    configs: list[RNNConfig],
    settings: TrainSettings,
    *,
    checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    on_progress: Callable[[PackRun], None] | None = None,
    corpus: Corpus | None = None,
    weights: Callable[[str], str | Path] | None = None,
    stop_at: int | None = None,
) -> list[dict[str, Any]]:
    """Train ``configs`` as one pack (:class:`PackRun`) and return their result records, in order.

    checkpoint: the pack's checkpoint file: resumed from if it exists, saved to every
        ``checkpoint_every`` steps and when stopped. resume_from: another pack's checkpoint
        holding every member (an earlier pack of which these are the members left), used when
        ``checkpoint`` does not exist. The other arguments are :func:`train`'s;
        ``weights(id)`` names each member's weights file.
    """
    _check_types(list(configs), settings)
    run = PackRun(configs, settings, corpus)
    restored = checkpoint is not None and run.restore(checkpoint)
    if not restored and resume_from is not None:
        members = checkpoints.read_pack(resume_from, run.checkpoint_problems)
        if members is not None:
            run.load_members(members, str(resume_from))
    _drive_and_save(run, checkpoint, before_checkpoint, should_stop, on_progress, stop_at)
    results = run.results(weights)
    return [results[c.id] for c in configs]
