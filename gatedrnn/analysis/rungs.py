"""What a sweep with successive halving shows (issue 32; gatedrnn/halving.py). No torch.

Runs of one sweep end at different rungs, so their final losses are measured at different steps
and are never ranked together: the effects, interactions and variance shares are computed at the
first rung, where every configuration is present (:func:`first_rung`), each later rung is ranked
on its own, and :func:`rank_agreement` says how well a rung's ranking predicts the next one's on
the configurations that reached both (Spearman's rank correlation with a 95 % interval): whether
early ranking can be trusted for this study. :func:`cost` is the saving in configuration-steps.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats as sps

from ..store.folder import ResultsFolder
from .results import label, load
from .audit import lost
from .stats import summarise

__all__ = ["Rungs", "rungs_of", "rank_agreement", "cost", "halving_lines", "saving_line", "halving_table", "verdict",
           "HALVING_COLUMNS"]


class Rungs:
    """A halving sweep's rungs: their steps, each rung's records, each decision."""

    def __init__(self, folder: ResultsFolder, eta: int, steps: list[int]) -> None:
        self.folder, self.eta, self.steps = folder, eta, steps
        self.frames = [self._frame(k) for k in range(1, len(steps) + 1)]
        self.decisions = [folder.read_promotion(k) for k in range(1, len(steps))]

    def _frame(self, k: int) -> pd.DataFrame:
        path = self.folder.rung_dir(k)
        return load(path) if path.is_dir() else pd.DataFrame(columns=["id", "config id", "status"])

    def first_rung(self, df: pd.DataFrame) -> pd.DataFrame:
        """The runs as they were at the first rung: every configuration's rung-1 record, and the
        results of those that ended before it (diverged or failed)."""
        first = self.frames[0]
        before = df[~df["id"].isin(set(first["id"]))] if len(first) else df
        return pd.concat([first, before], ignore_index=True) if len(first) else df


def rungs_of(folder: ResultsFolder, settings: dict[str, Any] | None) -> Rungs | None:
    """The rungs of a folder trained with ``--halving`` (its recorded ``settings``), or None."""
    eta = settings.get("halving") if isinstance(settings, dict) else None
    if not isinstance(eta, int) or eta < 2:
        return None
    rungs, steps = settings.get("rungs", 3), settings["steps"]
    return Rungs(folder, eta, [steps // eta ** (rungs - k) for k in range(1, rungs + 1)])


def rank_agreement(a: pd.DataFrame, b: pd.DataFrame, metric: str, level: float = 0.95) -> dict[str, Any] | None:
    """Spearman's rank correlation between the configurations' mean ``metric`` at one rung (``a``)
    and the next (``b``), over the configurations in both (those promoted), with a ``level``
    interval from Fisher's z with the variance 1.06 / (n - 3) of Fieller, Hartley and Pearson
    (none below 5 configurations). None without two in common."""
    if any(metric not in x or not len(x) for x in (a, b)):
        return None  # a rung not reached yet
    means = [x[x["status"] == "done"].groupby("config id")[metric].mean() for x in (a, b)]
    both = pd.concat(means, axis=1, keys=["a", "b"]).dropna()
    n = len(both)
    if n < 2:
        return None
    rho = float(sps.spearmanr(both["a"], both["b"]).statistic) if both["a"].nunique() > 1 < both["b"].nunique() \
        else math.nan
    lo = hi = math.nan
    if n >= 5 and math.isfinite(rho) and abs(rho) < 1:
        half = float(sps.norm.ppf(0.5 + level / 2)) * math.sqrt(1.06 / (n - 3))
        lo, hi = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    return {"configurations": n, "spearman": rho, "ci low": lo, "ci high": hi}


def cost(df: pd.DataFrame, steps: int, rungs: "Rungs | None" = None) -> dict[str, float] | None:
    """Configuration-steps trained against every run trained to ``steps``: each run's steps at its
    end, or (``rungs`` given) at the last rung it reached while it is still training."""
    frames = [df] + (list(rungs.frames) if rungs is not None else [])
    reached: dict[str, float] = {}
    for frame in frames:
        if not len(frame) or "training steps" not in frame:
            continue
        for rid, n in zip(frame["id"], pd.to_numeric(frame["training steps"], errors="coerce")):
            if pd.notna(n):
                reached[rid] = max(reached.get(rid, 0.0), float(n))
    if not reached:
        return None
    full = float(len(reached) * steps)
    unfinished = len(set(reached) - set(df["id"])) if len(df) else len(reached)
    return {"trained": sum(reached.values()), "full": full, "share": sum(reached.values()) / full,
            "unfinished": unfinished}


def halving_lines(rungs: Rungs, df: pd.DataFrame, metric: str, h: str) -> list[str]:
    """summary.md's section on successive halving."""
    rows = []
    for k, (steps, frame) in enumerate(zip(rungs.steps, rungs.frames), start=1):
        decision = rungs.decisions[k - 1] if k <= len(rungs.decisions) else None
        rows.append({"rung": k, "steps": steps, "runs": len(frame),
                     "configurations": frame["config id"].nunique() if len(frame) else 0,
                     "continue": "" if decision is None else len(decision["promoted"]),
                     "kept as could-be-best": "" if decision is None else len(decision.get("kept for could be best", [])),
                     "audited": "" if decision is None else len(decision.get("audited", []))})
    rule = next((d.get("rule", "protect") for d in rungs.decisions if d), None)
    audited = any(d and d.get("audited") for d in rungs.decisions)
    out = [f"{h} Successive halving (ETA {rungs.eta})", "",
           f"Every configuration trained to rung 1; at each rung the best 1/{rungs.eta}"
           + (" (and every one that could be best there)" if rule == "protect" else " by the mean over seeds")
           + " continued from its checkpoint" + (", and an audit sample of the others on to the end" if audited else "")
           + f". **The effects, interactions, variance shares and the ranking above are at rung 1 ({rungs.steps[0]} "
           "steps)**, where every configuration is present; each rung is ranked on its own below.", "", _table(rows), ""]
    spent = cost(df, rungs.steps[-1], rungs)
    if spent:
        left = (f" so far ({spent['unfinished']} configurations still training: the share grows until they finish)"
                if spent["unfinished"] else "")
        out += [f"- Cost: {spent['trained']:.0f} configuration-steps of the {spent['full']:.0f} that training every "
                f"run to {rungs.steps[-1]} steps takes: **{100 * spent['share']:.1f} %**{left}.", ""]
    out += audit_lines(rungs, metric)
    agree = []
    for k in range(1, len(rungs.frames)):
        r = rank_agreement(_plain(rungs.frames[k - 1]), _plain(rungs.frames[k]), metric)
        if r is not None:
            ci = f" [{r['ci low']:+.2f}, {r['ci high']:+.2f}]" if math.isfinite(r["ci low"]) else " (too few for an interval)"
            agree.append(f"- rung {k} → {k + 1}: Spearman {r['spearman']:+.2f}{ci} over the {r['configurations']} "
                         f"configurations promoted to rung {k + 1}")
    if agree:
        out += ["How well a rung's ranking predicts the next **on the configurations promoted only** (those that "
                "matter most, the ones stopped, are not in it: the audit's agreement above is over all):", "",
                *agree, ""]
    for k, frame in enumerate(rungs.frames, start=1):
        if not len(frame) or metric not in frame:
            continue
        done = frame[(frame["status"] == "done") & frame[metric].notna()]
        if not len(done):
            continue
        table = summarise(done, [metric]).sort_values(f"{metric} mean", kind="stable").head(5)
        names = [label(done[done["config id"] == c].iloc[0]) for c in table["config id"]]
        shown = ", ".join(f"`{n}` {m:.4f}" for n, m in zip(names, table[f"{metric} mean"]))
        out.append(f"- best at rung {k} ({rungs.steps[k - 1]} steps), mean {metric}: {shown}")
    return out + [""]


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """A rung's records without the runs that reached it past a stop (audited, continued)."""
    for flag in ("audited", "continued"):
        if flag in frame:
            frame = frame[~frame[flag].fillna(False).astype(bool)]
    return frame


HALVING_COLUMNS = ["rung", "steps", "configurations", "promoted", "audited", "agreement", "agreement ci low",
                   "agreement ci high", "stopped better than best", "stopped better ci low", "stopped better ci high"]


def audit_of(rungs: Rungs, metric: str) -> dict[str, Any] | None:
    return lost(rungs.frames, rungs.decisions, metric)


def halving_table(rungs: Rungs, metric: str) -> pd.DataFrame:
    """halving.csv: one row per decided rung (:data:`HALVING_COLUMNS`)."""
    est = audit_of(rungs, metric)
    rows = []
    for r in (est or {}).get("rungs", []):
        a, b = r["agreement"], r["better"]
        rows.append([r["rung"], r["steps"], r["configurations"], r["promoted"], r["audited"], a["spearman"],
                     a["ci low"], a["ci high"], b["estimate"], b["ci low"], b["ci high"]])
    return pd.DataFrame(rows, columns=HALVING_COLUMNS)


def verdict(rungs: Rungs, df: pd.DataFrame, metric: str) -> str | None:
    """summary.md's one plain line on what halving saved and what it may have lost."""
    spent = cost(df, rungs.steps[-1], rungs)
    est = audit_of(rungs, metric)
    if spent is None:
        return None
    saved = f"Successive halving trained {100 * spent['share']:.1f} % of the configuration-steps of training every run"
    if est is None:
        return saved + ("; with no audit sample it cannot say what its stopping lost (train with --audit, the "
                        "default, to measure it)." if not any(d and d.get("audit") for d in rungs.decisions)
                        else "; the audit has not reached the end yet.")
    b = est["better"]
    line = (f"{saved}; of the {b['stopped']} configurations it stopped, an estimated {b['estimate']:.1f} "
            f"[{b['ci low']:.0f}, {b['ci high']:.0f}] would have beaten the best survivor")
    if est["audited could be best"]:
        line += f"; {len(est['audited could be best'])} audited configuration(s) could be best and compete for the answer"
    return line + "."


def audit_lines(rungs: Rungs, metric: str) -> list[str]:
    """The audit: what the stopping may have lost, with its intervals; and the answer, chosen
    among everything trained to the end."""
    est = audit_of(rungs, metric)
    if est is None:
        return []
    units = _names(rungs)
    b = est["better"]
    out = ["**What the stopping may have lost** (from the audit: a stratified random sample of the stopped "
           "configurations, trained to the end anyway; 95 % intervals, exact per stratum, Bonferroni over strata):", "",
           f"- the best survivor: `{units.get(est['best survivor unit'], est['best survivor unit'][:12])}`, final "
           f"{metric} {est['best survivor']:.4f} (of {est['survivors']} trained to the end without a stop);",
           f"- stopped configurations whose final {metric} would have been better than it: an estimated "
           f"**{b['estimate']:.1f} [{b['ci low']:.0f}, {b['ci high']:.0f}]** of the {b['stopped']} stopped;"]
    c = est["in could-be-best"]
    out.append(f"- that would have ended in the could-be-best set: {c['estimate']:.1f} [{c['ci low']:.0f}, "
               f"{c['ci high']:.0f}];" if c else "- that would have ended in the could-be-best set: needs replicates "
               "(one seed: could-be-best cannot tell);")
    gain = est["largest gain"]
    if gain is not None:
        out.append(f"- the largest improvement an audited configuration showed over the best survivor: {gain:+.4f}"
                   + (" (none beat it)" if gain <= 0 else "") + ";")
    for u in est["audited could be best"]:
        out.append(f"- **`{units.get(u, u[:12])}` was stopped, audited, and could be best at the end** (final "
                   f"{est['final'][u]:.4f}): it competes for the answer with the survivors;")
    if est["audit pending"]:
        out.append(f"- {est['audit pending']} audited configuration(s) still training: these estimates will change.")
    out.append("")
    rows = []
    for r in est["rungs"]:
        a = r["agreement"]
        ci = f"[{a['ci low']:+.2f}, {a['ci high']:+.2f}]" if math.isfinite(a["ci low"]) else "(too few)"
        rows.append({"rung": r["rung"], "steps": r["steps"], "configurations": r["configurations"],
                     "audited": r["audited"],
                     "agreement with the end, over all": f"{a['spearman']:+.2f} {ci}" if math.isfinite(a["spearman"])
                     else "", "stopped better than the best survivor": f"{r['better']['estimate']:.1f} "
                     f"[{r['better']['ci low']:.0f}, {r['better']['ci high']:.0f}] of {r['better']['stopped']}"})
    out += ["Each rung's ranking against the final one over **all** the configurations that entered it (survivors "
            "weighted 1, audited ones by 1 / their inclusion probability; Fisher's z at the effective sample size):",
            "", _table(rows), ""]
    final = sorted(est["final"].items(), key=lambda kv: kv[1])[:5]
    out += ["The answer is chosen among everything trained to the end (survivors and audited; runs continued by "
            "hand are shown in the results but never in these estimates): " + ", ".join(
                f"`{units.get(u, u[:12])}` {v:.4f}" for u, v in final) + ".", ""]
    return out


def _names(rungs: Rungs) -> dict[str, str]:
    """Unit id -> a configuration's label (units are configuration ids without seed)."""
    out = {}
    for frame in rungs.frames:
        for _, row in frame.drop_duplicates("config id").iterrows() if len(frame) else []:
            out.setdefault(row["config id"], label({**row, "seed swept": False}))  # a unit has every seed
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(rows)
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def saving_line(rungs: Rungs, df: pd.DataFrame) -> str | None:
    spent = cost(df, rungs.steps[-1], rungs)
    if not spent:
        return None
    left = f"; {spent['unfinished']} configurations still training" if spent["unfinished"] else ""
    return (f"successive halving: {spent['trained']:.0f} of {spent['full']:.0f} configuration-steps "
            f"({100 * spent['share']:.1f} % of training every run to {rungs.steps[-1]} steps{left})")

