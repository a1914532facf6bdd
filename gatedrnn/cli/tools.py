"""Looking at a sweep without training: ``gatedrnn status``, ``inspect`` and ``sample``.

Every function takes plain values and returns data (a dict for ``--json``) or text; the
command line (:mod:`gatedrnn.cli.main`) prints them. Bad input raises :class:`ToolError` with one line.
Wherever an ID is taken, it is a configuration id or a unique prefix of one, looked up among the
results, checkpoints and weights of the results folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..spec.config import RNNConfig, TrainSettings
from ..store.journal import FormatError
from ..store.folder import ResultsFolder, is_config_id, read_json, result_problem
from ..spec.grid import ConfigFileError, read_configs
from ..store.status import format_snapshot, recorded_config_file, snapshot

if TYPE_CHECKING:
    import torch

__all__ = ["ToolError", "resolve_id", "sweep_report", "format_sweep_report", "inspect", "format_inspect", "sample"]


class ToolError(ValueError):
    """Bad input to a tool: one line naming the file, id or value."""


# ---------------------------------------------------------------------------- ids
def _known_ids(folder: ResultsFolder) -> set[str]:
    ids = set(folder.finished_ids())
    for d, suffix in ((folder.checkpoints, ".pt"), (folder.weights_dir, ".pt"), (folder.weights_dir, ".safetensors")):
        if d.is_dir():
            ids |= {p.name[: -len(suffix)] for p in d.iterdir()
                    if p.name.endswith(suffix) and is_config_id(p.name[: -len(suffix)])}
    for rec in folder.pack_records().values():  # members of packs with a saved state
        if folder.pack_checkpoint(rec["id"]).exists():
            ids |= set(rec["members"])
    return ids


def resolve_id(results_dir: str | Path, prefix: str) -> str:
    """The configuration id that ``prefix`` starts, among the folder's results, checkpoints
    (its own or its pack's) and weights; ToolError when the folder is missing, nothing matches, or several do."""
    folder = ResultsFolder(results_dir)
    if not folder.root.is_dir():
        raise ToolError(f"{folder.root}: no such results folder")
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise ToolError(f"{prefix!r} is not a configuration id (64 hexadecimal digits, or a prefix of them)")
    matches = sorted(i for i in _known_ids(folder) if i.startswith(prefix))
    if not matches:
        raise ToolError(f"{folder.root}: no run with an id starting {prefix!r}")
    if len(matches) > 1:
        shown = ", ".join(m[:16] for m in matches[:8]) + (" ..." if len(matches) > 8 else "")
        raise ToolError(f"{folder.root}: {len(matches)} runs have ids starting {prefix!r}: {shown}")
    return matches[0]


# ---------------------------------------------------------------------------- status
def sweep_report(results_dir: str | Path, config_file: str | Path | None = None,
                 lease: float = 120.0, watch: float = 0.0) -> dict[str, Any]:
    """The sweep's state (:func:`gatedrnn.store.status.snapshot`) over its configuration file (the
    one given, or the one its launcher recorded), with that file's path; ``watch`` seconds
    between two looks, so that another host's claims are seen changing (or not)."""
    folder = ResultsFolder(results_dir)
    if not folder.root.is_dir():
        raise ToolError(f"{folder.root}: no such results folder")
    path, configs = sweep_configs(folder, config_file)
    try:
        return {**snapshot(folder.root, configs, lease, watch=watch), "config file": str(path)}
    except FormatError as e:
        raise ToolError(str(e)) from None


def sweep_configs(folder: ResultsFolder, config_file: str | Path | None) -> tuple[Path, list[dict[str, Any]]]:
    """The sweep's configuration list: ``config_file``, else the one its launcher recorded; with
    its path. ToolError when there is none or it cannot be read."""
    path = Path(config_file) if config_file is not None else recorded_config_file(folder.root)
    if path is None:
        raise ToolError(f"{folder.root}: no configuration file recorded for this results folder; "
                        "name it with --config-file")
    try:
        return path, read_configs(path)
    except ConfigFileError as e:
        raise ToolError(str(e)) from None


def format_sweep_report(r: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    return format_snapshot(r, r["config file"], labels)


# ---------------------------------------------------------------------------- inspect
def _load(path: Path) -> Any:
    from ..training import checkpoints

    try:
        return checkpoints.read_weights(path) if path.suffix == ".safetensors" else checkpoints.load_file(path)
    except Exception as e:  # truncated, foreign, pickled code: all "cannot read"
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ToolError(f"{path}: not a readable gatedrnn checkpoint or weights file ({detail})") from None


def _input_init_of(model_state: dict[str, Any]) -> str:
    """The input map a model's weights were made with: the original's Linear has a bias
    (gatedrnn.models.model.LinearInput), the N(0, 1) embedding of earlier folders none."""
    return "linear" if "embedding.bias" in model_state else "normal"


def _parameter_table(config: RNNConfig, state: dict[str, "torch.Tensor"]) -> dict[str, Any]:
    from ..models.model import ByteModel

    model = ByteModel(config, input_init=_input_init_of(state))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    rows, by_layer = [], {}
    for name, t in state.items():
        kind = "trainable" if name in trainable else "fixed buffer"
        rows.append({"tensor": name, "shape": list(t.shape), "count": t.numel(), "kind": kind})
        part = name.split(".")
        layer = f"layer {part[1]}" if part[0] == "layers" else part[0]
        entry = by_layer.setdefault(layer, {"trainable": 0, "fixed buffer": 0})
        entry[kind] += t.numel()
    totals = {"trainable": sum(r["count"] for r in rows if r["kind"] == "trainable"),
              "fixed buffer": sum(r["count"] for r in rows if r["kind"] == "fixed buffer")}
    return {"tensors": rows, "by layer": by_layer, "total": totals}


def inspect(target: str, results_dir: str | Path = "results_01_all") -> dict[str, Any]:
    """What a checkpoint, a weights file or a finished run (by path or id) holds."""
    from ..training import checkpoints

    path = Path(target)
    result = member = None
    if not path.is_file():
        cid = resolve_id(results_dir, target)
        folder = ResultsFolder(results_dir)
        result = read_json(folder.result(cid)) if folder.result(cid).exists() else None
        in_pack = folder.newest_pack_checkpoint(cid, kept=True)
        for candidate in (folder.checkpoint(cid), folder.kept_checkpoint(cid), in_pack, folder.existing_weights(cid)):
            if candidate is not None and candidate.exists():
                path = candidate
                member = cid if candidate == in_pack else None
                break
        else:
            path = folder.result(cid)
    if path.suffix == ".json":
        rec = result if result is not None else read_json(path)
        if result_problem(rec) is not None:
            raise ToolError(f"{path}: not a result file ({result_problem(rec)})")
        return _inspect_result(path, rec)
    state = _load(path)
    if checkpoints.kind_of(state) == "pack checkpoint":
        if member is None:
            return _inspect_pack(path, state)
        state = state["members"][member]
    kind = checkpoints.kind_of(state)
    if kind == "weights" or (kind == "checkpoint" and "model" in state and "optimizer" in state):
        model_state = state["model"]
    elif not isinstance(state, dict):
        raise ToolError(f"{path}: not a gatedrnn checkpoint or weights file")
    else:
        raise ToolError(f"{path}: not a gatedrnn checkpoint or weights file (format {state.get('format')!r})")
    try:
        config = RNNConfig.from_dict(state["config"])
        settings = TrainSettings.from_dict(state["settings"])
    except (KeyError, TypeError, ValueError) as e:
        raise ToolError(f"{path}: its configuration or settings do not read ({e})") from None
    out: dict[str, Any] = {"file": str(path), "kind": kind, "id": config.id, "configuration": config.to_dict(),
                           "label": config.short(), "settings": settings.to_dict(), "step": state.get("step"),
                           "dataset": state.get("dataset"), "dataset sha256": state.get("dataset sha256"),
                           "parameters": _parameter_table(config, model_state)}
    if kind == "checkpoint":
        opt = state.get("optimizer")
        if isinstance(opt, dict) and opt.get("param_groups"):
            group = opt["param_groups"][0]
            moments = [t for st in opt.get("state", {}).values() for k, t in st.items()
                       if k in ("exp_avg", "exp_avg_sq") and hasattr(t, "numel")]
            steps = [st.get("step") for st in opt.get("state", {}).values()]
            out["optimizer"] = {"kind": "Adam", "lr": group.get("lr"), "betas": list(group.get("betas", [])),
                                "step count": int(steps[0]) if steps and steps[0] is not None else 0,
                                "moment values": sum(t.numel() for t in moments),
                                "moment bytes": sum(t.numel() * t.element_size() for t in moments)}
        else:
            out["optimizer"] = {"kind": "closed-form ridge readout (no optimizer)"}
        curve = state.get("curve") or []
        val = state.get("val curve") or []
        out["curve"] = {"points": len(curve), "last": curve[-1] if curve else None,
                        "min": min(curve) if curve else None, "val loss": val[-1][1] if val else None}
    if result is not None:
        out["result"] = {k: result.get(k) for k in ("status", "min loss", "val loss", "val bpb", "training steps")}
    return out


def _inspect_pack(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """A pack checkpoint: its members, each with its step and curve so far."""
    members = []
    for cid, st in state["members"].items():
        try:
            label = RNNConfig.from_dict(st["config"]).short()
        except (KeyError, TypeError, ValueError):
            label = cid[:12]
        curve = st.get("curve") or [] if isinstance(st, dict) else []
        members.append({"id": cid, "label": label, "step": st.get("step") if isinstance(st, dict) else None,
                        "last loss": curve[-1] if curve else None,
                        "diverged at": st.get("diverged at") if isinstance(st, dict) else None})
    return {"file": str(path), "kind": "pack checkpoint", "id": state.get("pack"), "step": state.get("step"),
            "members": members}


def _inspect_result(path: Path, rec: dict[str, Any]) -> dict[str, Any]:
    curve = [v for v in rec.get("loss", []) if isinstance(v, (int, float))]
    return {"file": str(path), "kind": "result", "id": rec.get("id"),
            "configuration": {k: v for k, v in rec.items() if k in RNNConfig.__dataclass_fields__},
            "settings": rec.get("settings"), "step": rec.get("training steps"), "dataset": rec.get("dataset"),
            "dataset sha256": rec.get("dataset sha256"), "status": rec.get("status"),
            "curve": {"points": len(curve), "last": curve[-1] if curve else None,
                      "min": min(curve) if curve else None, "val loss": rec.get("val loss")},
            "parameters": {"total": {"trainable": rec.get("parameters")}},
            "note": "no checkpoint or weights file for this run (trained with --no-weights?)"}


def format_inspect(r: dict[str, Any]) -> str:
    if r["kind"] == "pack checkpoint":
        lines = [f"{r['file']}: checkpoint of pack {r['id']} at step {r['step']}, {len(r['members'])} members"]
        for m in r["members"]:
            loss = "-" if m["last loss"] is None else f"{m['last loss']:.4f}"
            state = f"diverged at {m['diverged at']}" if m["diverged at"] is not None else f"loss {loss}"
            lines.append(f"  {m['id'][:12]}  {m['label']:<18} {state}")
        return "\n".join(lines)
    lines = [f"{r['file']}: {r['kind']} of {r.get('label') or r['id']}", f"  id        {r['id']}",
             f"  config    {r['configuration']}"]
    if r.get("settings"):
        lines.append(f"  settings  {r['settings']}")
    lines.append(f"  step      {r.get('step')}")
    lines.append(f"  corpus    {r.get('dataset')} (sha256 {str(r.get('dataset sha256'))[:16]}…)")
    if "optimizer" in r:
        o = r["optimizer"]
        lines.append("  optimizer " + ", ".join(f"{k} {v}" for k, v in o.items()))
    if "curve" in r:
        c = r["curve"]
        fmt = lambda v: "?" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"  curve     {c['points']} points, last {fmt(c['last'])}, min {fmt(c['min'])}, "
                     f"val loss {fmt(c['val loss'])}")
    p = r["parameters"]
    if "tensors" in p:
        lines.append(f"  {'tensor':<34} {'shape':<16} {'count':>10}  kind")
        for t in p["tensors"]:
            lines.append(f"  {t['tensor']:<34} {str(tuple(t['shape'])):<16} {t['count']:>10}  {t['kind']}")
        for layer, n in p["by layer"].items():
            lines.append(f"  total {layer:<28} {'':<16} {n['trainable']:>10}  trainable"
                         + (f" (+{n['fixed buffer']} fixed)" if n["fixed buffer"] else ""))
    lines.append(f"  total parameters: {p['total'].get('trainable')} trainable"
                 + (f", {p['total']['fixed buffer']} fixed" if p["total"].get("fixed buffer") else ""))
    if r.get("note"):
        lines.append(f"  note: {r['note']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- sample
def sample(run_id: str, results_dir: str | Path = "results_01_all", prompt: str = "", n_bytes: int = 200,
           temperature: float = 1.0, top_k: int | None = None, seed: int = 0, device: str = "cpu") -> bytes:
    """Bytes generated by a finished run's model: its state warmed on ``prompt``, then ``n_bytes``
    drawn one at a time (softmax of logits / ``temperature``, the ``top_k`` likeliest only)."""
    import torch

    from ..training import checkpoints
    from ..training.devices import resolve_device
    from ..models.model import ByteModel

    if n_bytes < 0:
        raise ToolError(f"--bytes must be >= 0, got {n_bytes}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ToolError(f"--temperature must be a positive number, got {temperature}")
    if top_k is not None and not 1 <= top_k <= 256:
        raise ToolError(f"--top-k must be in 1..256, got {top_k}")
    cid = resolve_id(results_dir, run_id)
    folder = ResultsFolder(results_dir)
    path = folder.existing_weights(cid)
    if path is None:
        raise ToolError(f"{folder.weights(cid)}: no weights for run {cid[:12]} (not finished, or trained with "
                        "--no-weights)")
    state = _load(path)
    if checkpoints.kind_of(state) != "weights":
        raise ToolError(f"{path}: not a gatedrnn weights file")
    config = RNNConfig.from_dict(state["config"])
    if config.task != "bytes":
        raise ToolError(f"run {cid[:12]} learned the {config.task} task, not next-byte prediction: it has no bytes "
                        "to sample (its test metrics are in its result file)")
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise ToolError(str(e)) from None
    model = ByteModel(config, input_init=_input_init_of(state["model"]))
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    with torch.no_grad():
        return _generate(model, dev, prompt.encode("utf-8") or b"\n", n_bytes, temperature, top_k, seed)


def _generate(model: Any, dev: Any, text: bytes, n_bytes: int, temperature: float, top_k: int | None,
              seed: int) -> bytes:
    """The model's state warmed on ``text``, then ``n_bytes`` drawn one at a time."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    states = model.initial_state(1)
    logits = None
    for b in text:
        logits, states = model.step(torch.tensor([b], device=dev), states)
    out = bytearray()
    for _ in range(n_bytes):
        z = (logits[0].float() / temperature).cpu()
        if top_k is not None:
            cut = torch.topk(z, top_k).values[-1]
            z = z.masked_fill(z < cut, float("-inf"))
        b = int(torch.multinomial(torch.softmax(z, dim=0), 1, generator=gen))
        out.append(b)
        logits, states = model.step(torch.tensor([b], device=dev), states)
    return bytes(out)
