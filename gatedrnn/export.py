"""``gatedrnn export mlflow``: a results folder's runs as MLflow runs.

Every finished run becomes an MLflow run, matched by its ``gatedrnn.id`` tag, so that a second
export updates rather than duplicates: configuration and settings as params, the loss and
validation curves as step-indexed metrics, the final metrics, status and id as tags, the result
file (and optionally the weights) as artifacts.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .config import RNNConfig
from .folder import ResultsFolder, is_config_id, read_json, result_problem
from .tools import ToolError

__all__ = ["export_mlflow", "default_tracking_uri"]

_FINAL = ("min loss", "val loss", "val bpb", "epochs", "steps per second", "train seconds", "parameters",
          "peak memory MB", "convergence step", "inference ms per step (batch 1)",
          "inference ms per step (training batch)", "training steps", "resumes", "attempts")


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
                  experiment: str = "gatedrnn", weights: bool = False) -> dict[str, Any]:
    """Every finished run of the folder as an MLflow run (matched by its ``gatedrnn.id`` tag, so a
    second export updates rather than duplicates): configuration and settings as params, the
    loss and validation curves as step-indexed metrics, the final metrics, status and id as tags,
    the result file (and with ``weights`` the weights file) as artifacts."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ToolError("MLflow is not installed: pip install 'gatedrnn[mlflow]' (and 'mlflow' itself for its UI)") from None
    folder = ResultsFolder(results_dir)
    if not folder.root.is_dir():
        raise ToolError(f"{folder.root}: no such results folder")
    records = []
    for path in folder.result_files():
        rec = read_json(path)
        if result_problem(rec, path.stem if is_config_id(path.stem) else None) is None and "id" in rec:
            records.append((path, rec))
    tracking_uri, artifacts = _store(folder, tracking_uri)
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
    created = sum(_export_run(client, exp_id, path, rec, folder.existing_weights(rec["id"]) if weights else None)
                  for path, rec in records)
    ui = f"mlflow ui --backend-store-uri {tracking_uri}"
    return {"tracking uri": tracking_uri, "experiment": experiment, "experiment id": exp_id, "runs": len(records),
            "created": created, "updated": len(records) - created, "ui": ui}


def _store(folder: ResultsFolder, tracking_uri: str | None) -> tuple[str, str | None]:
    """The tracking URI (by default a SQLite store beside the results, created here) and, for
    that default, where a new experiment's artifacts go; ToolError for a local store that
    cannot be written."""
    if tracking_uri is None:
        tracking_uri, store = default_tracking_uri(folder.root)
        try:
            store.mkdir(exist_ok=True)
        except OSError as e:
            raise ToolError(f"{store}: cannot create the local MLflow store ({e.strerror or e})") from None
        return tracking_uri, (store / "artifacts").as_uri()
    if tracking_uri.startswith(("sqlite:", "file:")):  # a local store: can it be written?
        target = Path(urlparse(tracking_uri).path)
        parent = target.parent if tracking_uri.startswith("sqlite:") else target
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ToolError(f"--tracking-uri {tracking_uri}: {parent} is not a writable folder")
    return tracking_uri, None


def _export_run(client: Any, exp_id: str, path: Path, rec: dict[str, Any], weights: Path | None) -> bool:
    """One result as an MLflow run, created or brought up to date; True when it was created."""
    from mlflow.entities import Metric, Param, RunTag

    cid = rec["id"]
    found = client.search_runs([exp_id], filter_string=f"tags.`gatedrnn.id` = '{cid}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(exp_id, run_name=_label(rec), tags={"gatedrnn.id": cid}).info.run_id
    params = {k: rec[k] for k in RNNConfig.__dataclass_fields__ if k in rec}
    params.update({f"settings.{k}": v for k, v in (rec.get("settings") or {}).items()})
    params.update({k: rec[k] for k in ("dataset", "dataset sha256", "batch size", "history size") if k in rec})
    have = {p for p in client.get_run(run_id).data.params}
    new_params = [Param(_metric_name(k), str(v)) for k, v in params.items() if _metric_name(k) not in have]
    tags = [RunTag("gatedrnn.status", str(rec.get("status"))), RunTag("gatedrnn.label", _label(rec)),
            RunTag("gatedrnn.device", str(rec.get("device")))]
    now = int(time.time() * 1000)
    every = rec.get("log every") or 50
    start = rec.get("curve start") or every  # a memory task's curve starts at its first target
    series = {"loss": [(start + i * every, v) for i, v in enumerate(rec.get("loss") or []) if v is not None],
              "val loss": [(int(s), v) for s, v in rec.get("val curve") or [] if v is not None]}
    metrics = []
    for key, points in series.items():
        known = len(client.get_metric_history(run_id, key)) if found else 0
        metrics += [Metric(key, float(v), now, int(step)) for step, v in points[known:]]
    tests = rec.get("test metrics") if isinstance(rec.get("test metrics"), dict) else {}
    chance = rec.get("chance") if isinstance(rec.get("chance"), dict) else {}
    finals = {f"final {_metric_name(key)}": rec.get(key) for key in _FINAL}
    finals.update({f"test {_metric_name(key)}": v for key, v in tests.items()})
    finals.update({f"chance {_metric_name(key)}": v for key, v in chance.items()})
    for name, v in finals.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            if not found or client.get_run(run_id).data.metrics.get(name) != float(v):
                metrics.append(Metric(name, float(v), now, int(rec.get("training steps") or 0)))
    for i in range(0, max(len(metrics), len(new_params), 1), 100):
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=new_params[i:i + 100], tags=tags if i == 0 else [])
    client.log_artifact(run_id, str(path))
    if weights is not None:
        client.log_artifact(run_id, str(weights))
    client.set_terminated(run_id, "FAILED" if rec.get("status") == "failed" else "FINISHED")
    return not found


def _label(rec: dict[str, Any]) -> str:
    from .results import config_of

    try:
        return RNNConfig.from_dict(config_of(rec)).short()
    except (TypeError, ValueError, KeyError):
        return str(rec.get("id"))[:12]
