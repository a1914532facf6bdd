"""``gatedrnn export mlflow``: a results folder's runs as MLflow runs, once or live (``--follow``).

Every configuration becomes one MLflow run, found again by its ``gatedrnn.id`` tag, so that a
second export (or a restarted follower) updates rather than duplicates: the configuration and
settings as params, the loss and validation curves as step-indexed metrics (a point is logged
only at a step its history lacks), the final and test metrics, status, label and reason as tags,
the result file (and optionally the weights) as artifacts. A finished run is FINISHED; a failed
or diverged one FAILED, with ``gatedrnn.reason``. With ``follow``, configurations that are
training appear as RUNNING runs with their curve so far (a point per log point, from the
claim's progress) and the store is re-synced every ``every`` seconds until the sweep has nothing
left to train, or Ctrl-C.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from ..spec.config import RNNConfig
from ..store.folder import ResultsFolder, is_config_id, read_json, result_problem
from ..store.status import Liveness, folder_index, journal_of, sweep_status
from .tools import ToolError, sweep_configs

__all__ = ["export_mlflow", "default_tracking_uri"]

_FINAL = ("min loss", "val loss", "val bpb", "epochs", "steps per second", "train seconds", "parameters",
          "peak memory MB", "convergence step", "inference ms per step (batch 1)",
          "inference ms per step (training batch)", "training steps", "resumes", "attempts")
_TERMINAL = ("FINISHED", "FAILED", "KILLED")


def _metric_name(key: str) -> str:
    """MLflow's names allow letters, digits, ``_ - . / `` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "", key).strip()


def default_tracking_uri(results_dir: str | Path) -> tuple[str, Path]:
    """The local store beside a results folder: ``<results>.mlflow/mlflow.db`` (SQLite, MLflow's
    recommended local backend) and its artifacts folder."""
    root = Path(results_dir).resolve()
    store = root.parent / f"{root.name}.mlflow"
    return f"sqlite:///{store / 'mlflow.db'}", store


def export_mlflow(results_dir: str | Path = "results_01_all", tracking_uri: str | None = None,
                  experiment: str = "gatedrnn", weights: bool = False, *, artifact_location: str | None = None,
                  follow: bool = False, every: float = 10.0, config_file: str | Path | None = None,
                  say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export every finished run of the folder (see the module's docstring); with ``follow``,
    keep the store in step with the running sweep until it is finished or interrupted.
    ``config_file``: the sweep's configuration list (default: the one its launcher recorded),
    which says what is still to train; ``say``: where a follower reports each pass."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ToolError("MLflow is not installed: pip install 'gatedrnn[mlflow]' (and 'mlflow' itself for its UI)") from None
    folder = ResultsFolder(results_dir)
    if not folder.root.is_dir():
        raise ToolError(f"{folder.root}: no such results folder")
    if follow and not every > 0:
        raise ToolError(f"--every must be a positive number of seconds, got {every}")
    configs = sweep_configs(folder, config_file)[1] if follow else None
    tracking_uri, artifacts = _store(folder, tracking_uri, artifact_location)
    for name in ("mlflow", "alembic"):  # their INFO lines about creating tables are not ours to print
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(
            experiment, artifact_location=artifacts)
    except Exception as e:  # an unreachable server, a URI of an unknown scheme, ...
        detail = " ".join(str(e).split())[:200]
        raise ToolError(f"--tracking-uri {tracking_uri}: cannot use it ({type(e).__name__}: {detail})") from None
    totals = {"runs": 0, "created": 0, "updated": 0, "running": 0, "passes": 0, "stopped": False}
    liveness = Liveness(120.0)  # what this follower has seen of the claims' heartbeats, across passes
    try:
        while True:
            counts = _sync(client, exp_id, folder, weights, configs, liveness, first=totals["passes"] == 0)
            totals.update(runs=counts["runs"], running=counts["running"], passes=totals["passes"] + 1)
            totals["created"] += counts["created"]
            totals["updated"] += counts["updated"]
            if say is not None and follow:
                say(f"{counts['runs']} finished, {counts['running']} running, {counts['pending']} pending")
            if not follow or not counts["running"] and not counts["pending"]:
                break
            time.sleep(every)
    except KeyboardInterrupt:
        totals["stopped"] = True
    ui = f"mlflow ui --backend-store-uri {tracking_uri}"
    return {"tracking uri": tracking_uri, "experiment": experiment, "experiment id": exp_id, "ui": ui, **totals}


def _store(folder: ResultsFolder, tracking_uri: str | None, artifact_location: str | None) -> tuple[str, str | None]:
    """The tracking URI (by default a SQLite store beside the results, created here) and where a
    new experiment's artifacts go: ``artifact_location``, else beside a local store (never the
    current folder); a server decides its own. ToolError for a local store that cannot be written."""
    if tracking_uri is None:
        tracking_uri, store = default_tracking_uri(folder.root)
        try:
            store.mkdir(exist_ok=True)
        except OSError as e:
            raise ToolError(f"{store}: cannot create the local MLflow store ({e.strerror or e})") from None
        return tracking_uri, artifact_location or (store / "artifacts").as_uri()
    if tracking_uri.startswith(("sqlite:", "file:")):  # a local store: can it be written?
        target = Path(urlparse(tracking_uri).path)
        parent = target.parent if tracking_uri.startswith("sqlite:") else target
        writable = parent
        while not writable.exists() and writable != writable.parent:
            writable = writable.parent
        if not writable.is_dir() or not os.access(writable, os.W_OK):
            raise ToolError(f"--tracking-uri {tracking_uri}: {writable} is not a writable folder")
        return tracking_uri, artifact_location or (parent / "artifacts").resolve().as_uri()
    return tracking_uri, artifact_location


def _known_runs(client: Any, exp_id: str) -> dict[str, Any]:
    """The experiment's runs by their ``gatedrnn.id`` tag."""
    out, token = {}, None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        for run in page:
            cid = run.data.tags.get("gatedrnn.id")
            if cid:
                out[cid] = run
        token = page.token
        if not token:
            return out


def _sync(client: Any, exp_id: str, folder: ResultsFolder, weights: bool,
          configs: list[dict[str, Any]] | None, liveness: Liveness | None = None, first: bool = True) -> dict[str, int]:
    """One pass. Following, the sweep's snapshot is taken *first* and its training
    configurations shown as RUNNING; then every finished result not yet final in the store is
    exported. In this order a pass whose snapshot finds nothing running or pending (the
    follower's last) exports every result written up to that snapshot, and a result written
    during the pass ends its run FINISHED after the snapshot's stale claim made it RUNNING."""
    counts = {"runs": 0, "created": 0, "updated": 0, "running": 0, "pending": 0}
    if configs is not None:
        known = _known_runs(client, exp_id)
        snap = sweep_status(folder, configs, liveness=liveness)
        counts["pending"] = snap["counts"]["pending"]
        by_id = {c["id"]: c for c in configs}
        for claim in snap["running"]:
            _live_run(client, exp_id, known.get(claim["id"]), by_id[claim["id"]], claim)
            counts["running"] += 1
    known = _known_runs(client, exp_id)  # with the runs just made RUNNING
    index = folder_index(folder) if configs is None else journal_of(folder).index  # the snapshot just looked
    # the first pass reads every result file (the original study's too); later passes only those
    # that the journal says changed since the last look (a follower reads what changed)
    paths = (list(folder.result_files()) if first else
             [folder.result(cid) for cid in sorted(index.changed) if cid in index.status])
    counts["runs"] = len(index.status) + sum(1 for p in paths if not is_config_id(p.stem))
    for path in paths:
        rec = read_json(path)
        if result_problem(rec, path.stem if is_config_id(path.stem) else None) is not None or "id" not in rec:
            continue
        run = known.get(rec["id"])
        if run is not None and run.info.status in _TERMINAL and run.data.tags.get("gatedrnn.synced") == _stamp(rec):
            continue  # exported already, as it is now
        _export_run(client, exp_id, run, path, rec, folder.existing_weights(rec["id"]) if weights else None)
        counts["created" if run is None else "updated"] += 1
    return counts


def _stamp(rec: Mapping[str, Any]) -> str:
    """What says that the store holds this very result (a retried configuration has another)."""
    return f"{rec.get('status')} {rec.get('end time')}"


def _logged_steps(client: Any, run_id: str, key: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


def _new_params(client: Any, run_id: str, params: Mapping[str, Any]) -> list:
    from mlflow.entities import Param

    have = set(client.get_run(run_id).data.params)
    return [Param(_metric_name(k), str(v)) for k, v in params.items() if _metric_name(k) not in have]


def _live_run(client: Any, exp_id: str, run: Any, config: Mapping[str, Any], claim: Mapping[str, Any]) -> None:
    """A configuration in training as a RUNNING run: its params, and its curve so far (the
    claim's progress is its latest log point)."""
    from mlflow.entities import Metric, RunTag

    cid = config["id"]
    if run is None:
        label = _label(config)
        run_id = client.create_run(exp_id, run_name=label, tags={"gatedrnn.id": cid, "gatedrnn.label": label,
                                                                 "gatedrnn.status": "running"}).info.run_id
        client.log_batch(run_id, params=_new_params(client, run_id, {k: v for k, v in config.items() if k != "id"}))
    else:
        run_id = run.info.run_id
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    progress = claim.get("progress") or {}
    step, loss = progress.get("step"), progress.get("loss")
    if not isinstance(step, int) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return
    if step not in _logged_steps(client, run_id, "loss"):
        now = int(time.time() * 1000)
        metrics = [Metric("loss", float(loss), now, step)]
        sps = progress.get("steps per second")
        if isinstance(sps, (int, float)) and math.isfinite(sps):
            metrics.append(Metric("steps per second", float(sps), now, step))
        rung = claim.get("rung")
        tags = [RunTag("gatedrnn.rung", f"training to rung {rung}")] if isinstance(rung, int) else []
        client.log_batch(run_id, metrics=metrics, tags=tags)


def _export_run(client: Any, exp_id: str, run: Any, path: Path, rec: dict[str, Any], weights: Path | None) -> None:
    """One result as an MLflow run, created or brought up to date, and ended: FINISHED, or
    FAILED with the reason for a failed or diverged run."""
    from mlflow.entities import Metric, RunTag

    cid = rec["id"]
    run_id = run.info.run_id if run is not None else client.create_run(
        exp_id, run_name=_label(rec), tags={"gatedrnn.id": cid}).info.run_id
    params = {k: rec[k] for k in RNNConfig.__dataclass_fields__ if k in rec}
    params.update({f"settings.{k}": v for k, v in (rec.get("settings") or {}).items()})
    params.update({k: rec[k] for k in ("dataset", "dataset sha256", "batch size", "history size") if k in rec})
    status = rec.get("status")
    reason = (rec.get("error") if status == "failed" else
              f"diverged at step {rec.get('diverged at step')}" if status == "diverged" else None)
    tags = [RunTag("gatedrnn.status", str(status)), RunTag("gatedrnn.label", _label(rec)),
            *([RunTag("gatedrnn.rung", f"{rec['rung']} of {rec.get('rungs')}"
                      + (" (stopped there: paused)" if rec.get("stopped at rung") else
                         f" (audited from rung {rec.get('audited at rung')})" if rec.get("audited") else
                         f" (continued by hand from rung {rec.get('continued from rung')})" if rec.get("continued")
                         else ""))] if rec.get("rung") else []),
            RunTag("gatedrnn.device", str(rec.get("device"))), RunTag("gatedrnn.synced", _stamp(rec))]
    if reason:
        tags.append(RunTag("gatedrnn.reason", str(reason)[:5000]))
    now = int(time.time() * 1000)
    every = rec.get("log every") or 50
    start = rec.get("curve start") or every  # a memory task's curve starts at its first target
    series = {"loss": [(start + i * every, v) for i, v in enumerate(rec.get("loss") or []) if v is not None],
              "val loss": [(int(s), v) for s, v in rec.get("val curve") or [] if v is not None]}
    metrics = []
    for key, points in series.items():
        logged = _logged_steps(client, run_id, key) if run is not None else set()
        metrics += [Metric(key, float(v), now, int(step)) for step, v in points if int(step) not in logged]
    tests = rec.get("test metrics") if isinstance(rec.get("test metrics"), dict) else {}
    chance = rec.get("chance") if isinstance(rec.get("chance"), dict) else {}
    finals = {f"final {_metric_name(key)}": rec.get(key) for key in _FINAL}
    finals.update({f"test {_metric_name(key)}": v for key, v in tests.items()})
    finals.update({f"chance {_metric_name(key)}": v for key, v in chance.items()})
    current = client.get_run(run_id).data.metrics if run is not None else {}
    for name, v in finals.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and current.get(name) != float(v):
            metrics.append(Metric(name, float(v), now, int(rec.get("training steps") or 0)))
    new_params = _new_params(client, run_id, params)
    for i in range(0, max(len(metrics), len(new_params), 1), 100):
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=new_params[i:i + 100], tags=tags if i == 0 else [])
    client.log_artifact(run_id, str(path))
    if weights is not None:
        client.log_artifact(run_id, str(weights))
    client.set_terminated(run_id, "FINISHED" if status == "done" else "FAILED")


def _label(rec: Mapping[str, Any]) -> str:
    from ..analysis.results import config_of

    try:
        return RNNConfig.from_dict(config_of(rec)).short()
    except (TypeError, ValueError, KeyError):
        return str(rec.get("id"))[:12]
