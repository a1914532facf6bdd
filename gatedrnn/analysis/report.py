"""``summary.md``: what a sweep found, in words and tables (DESIGN.md, "Layout").

:class:`Report` is what :func:`gatedrnn.analysis.examine.examine` found (the command prints it);
:func:`task_section` writes one task's part of the summary, a short list of sections, and
:func:`summary_document` the whole file. No torch, no figures: the numbers come from
:mod:`gatedrnn.analysis.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .results import label
from .references import memorisation_lines
from .stats import linear_model, value_means

__all__ = ["Report", "task_section", "summary_document", "md_table", "TASK_METRICS"]

TASK_METRICS = ("cross-entropy", "accuracy", "recall accuracy", "mse", "nrmse")  # gatedrnn.data.tasks


@dataclass
class Report:
    runs: int
    status: dict[str, int] | None
    best: dict[str, Any] | None
    below: int
    metric: str = "min loss"
    configurations: int = 0
    could_be_best: list[str] | None = None  # config ids that cannot be told from the best (None: cannot tell)
    could_be_best_labels: list[str] = field(default_factory=list)
    judged: int = 0  # configurations judged for it (the others lack the shared seeds)
    judged_ids: list[str] = field(default_factory=list)
    seeds_judged: list[int] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)  # labels of configurations without a judged seed
    one_noise_level: bool = True  # could-be-best used one pooled noise level (the variances agreed)
    heterogeneity: list[str] = field(default_factory=list)  # flagged keys in words
    stage: dict[str, Any] | None = None  # how the folder's configurations were chosen (folder.read_stage)
    tuned: Any = None  # gatedrnn.analysis.tuning.Tuned where lr is swept
    by_rate: pd.DataFrame | None = None  # the effects at each rate alone
    noise: dict[str, float] | None = None
    written: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    chance: float | None = None  # a memory task's chance (or persistence) level of the metric
    tasks: dict[str, "Report"] = field(default_factory=dict)  # each memory task's, by its label
    halving: str | None = None  # successive halving's saving, in one line
    verdict: str | None = None  # what halving saved and what it may have lost, in one plain line

    def status_line(self) -> str:
        if self.status is None:
            return f"{self.runs} result files (no configuration file to compare with)"
        c = self.status
        total = sum(c.values())
        return (f"done {c['done']} · diverged {c['diverged']} · failed {c['failed']} · running {c['running']} · "
                f"pending {c['pending']} (of {total})")

    def best_line(self) -> str | None:
        if not self.best:
            return None
        b = self.best
        ci = (f" [95 % CI {b['ci low']:.4f}, {b['ci high']:.4f}]" if math.isfinite(b.get("ci low", math.nan))
              else "")
        return (f"{b['label']}  {self.metric} {b[self.metric]:.4f}{ci} over {b['runs']} run(s)  id {b['id']}")

    def could_be_best_line(self) -> str:
        if self.could_be_best is None:
            return ("could be best: cannot tell: no two configurations have two or more runs on shared seeds "
                    "(replicate the best with init_experiments.py --replicate-from)")
        n = len(self.could_be_best)
        names = ", ".join(self.could_be_best_labels[:12]) + (", ..." if n > 12 else "")
        seeds = f" on seeds {' '.join(map(str, self.seeds_judged))}" if self.seeds_judged else ""
        noise = ("one noise level for all (their variances agree)" if self.one_noise_level else
                 "each with its own noise level (their variances differ)")
        unjudged = (f"; not judged (no run on those seeds): {', '.join(self.not_judged[:8])}"
                    + (", ..." if len(self.not_judged) > 8 else "")) if self.not_judged else ""
        return (f"could be best: {n} of {self.judged} configurations judged{seeds}, {noise}, cannot be told apart "
                f"from the best (family-wise 5 %): {names}{unjudged}; the best's own interval is not adjusted for "
                "its selection (the replicate stage estimates it afresh)")


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else f"{v:.4f}"
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _task_metrics(df: pd.DataFrame) -> list[str]:
    return [m for m in TASK_METRICS if m in df and df[m].notna().any()]


def _is_mackey(task: str) -> bool:
    return task.startswith("mackey-glass")


# ---------------------------------------------------------------------------- sections
def _seeds(values) -> str:
    return " ".join(str(int(s)) for s in values) if len(values) else "none recorded"


def _protocol(df: pd.DataFrame, ranked: pd.DataFrame, report: Report, h: str) -> list[str]:
    """What was selected on which split and seeds, and what is reported on which."""
    stage, metric = report.stage, report.metric
    has_test = "test loss mean" in ranked and ranked["test loss mean"].notna().any()
    seeds = sorted(df["seed"].dropna().unique()) if "seed" in df else []
    if not stage or stage.get("stage") != "replicate":
        out = [f"{h} Protocol", "",
               f"- Ranked and selected on **{metric}**" + (" (the validation split)" if metric == "val loss" else
                                                          " (each run's best point on its validation curve: "
                                                          "optimistic)" if metric == "min val loss" else "")
               + f", seeds {_seeds(seeds)}."]
        if _split_of(df) == "contiguous":
            out.append("- Validation and test are the two contiguous halves of the held-out 10 % (`--split "
                       "contiguous`, the literature's 90/5/5): different stretches of text, **not exchangeable**, so "
                       "test − validation measures the text as much as the models. `test bpb (whole split)`: the "
                       "whole test split scored once, the state carried through each stream (static evaluation), "
                       "the number to compare with published bits per byte.")
        out.append("- **test loss**: the test split, measured once at each run's end on its final weights and never "
                   "used to select; shown beside the ranking." if has_test else
                   "- No test split in these runs (made before the validation/test split).")
        return out + ["- The best's ranking metric is biased low: it was selected on the same runs. For an unbiased "
                      "estimate, train the chosen configurations on fresh seeds (`init_experiments.py "
                      "--replicate-from`) and read their test loss.", ""]
    reused = stage.get("reused") or []
    out = [f"{h} Protocol: a replicate stage", "",
           f"- Selected: the {stage.get('configurations', '?')} configurations with the lowest mean "
           f"{stage.get('selected by', 'val loss')} in `{stage.get('selected from')}` (its seeds "
           f"{_seeds(stage.get('selection seeds') or [])}).",
           f"- Estimated here on seeds {_seeds(stage.get('seeds') or [])}: " +
           ("none of them used by the selection (fresh)." if not reused else
            f"reusing {_seeds(reused)} of the selection (--allow-seed-reuse): those runs carry its bias."),
           "- Reported: **test loss** (the test split, measured once at each run's end, never used to select), the "
           "mean over these seeds with its 95 % t interval; rows in the order of their val loss, so that the "
           "table does not select on test either." if has_test else
           "- These runs have no test split (made before it existed): the report is on val loss.", ""]
    if has_test:
        t = ranked.copy()  # already in the order of the ranking metric
        t.insert(0, "configuration", [label(df[df["config id"] == i].iloc[0]) for i in t["id"]])
        cols = ["configuration", "runs", "test loss mean", "test loss ci low", "test loss ci high", "val loss mean",
                "test bpb mean"]
        out += [md_table(t[[c for c in cols if c in t]]), ""]
    return out


def _split_of(df: pd.DataFrame) -> str | None:
    """The split rule the runs recorded in their settings (None where none did)."""
    for settings in df["settings"].dropna() if "settings" in df else []:
        if isinstance(settings, dict) and "split" in settings:
            return settings["split"]
    return None


def _tuning(report: Report, df: pd.DataFrame, eff: pd.DataFrame | None, h: str) -> list[str]:
    """A swept lr: which view each table is, the best rate per configuration, the effects per rate."""
    tuned, by_rate, metric = report.tuned, report.by_rate, report.metric
    if tuned is None:
        return []
    rates = " ".join(f"{r:g}" for r in tuned.rates)
    counts = pd.Series(list(tuned.chosen.values())).value_counts()
    rows = []
    for rate in tuned.rates:
        col = tuned.by_rate[rate].dropna() if rate in tuned.by_rate else pd.Series(dtype=float)
        rows.append({"lr": f"{rate:g}", "configurations best at it": int(counts.get(rate, 0)),
                     f"best mean {metric} at this rate": float(col.min()) if len(col) else math.nan,
                     "median over configurations": float(col.median()) if len(col) else math.nan})
    if tuned.cross_fitted:
        how = (f"each configuration at its own best rate, **estimated on seeds that did not choose it**: its value "
               f"at each seed comes from the rate with the lowest mean {metric} on its other seeds (chosen within "
               "seeds, a diverged run counting as the worst loss), so the winner's curse of choosing a rate does "
               "not flatter it. `tuned lr` in the ranking is the rate chosen on all seeds (summary.csv: `tuned` "
               f"marks that row, with the cross-fitted `tuned {metric} mean` and interval).")
    else:
        o = tuned.optimism
        bound = (f" by up to **{o['bound']:.4f}** per configuration ({o['curse']:.3f} × a noise sd of at most "
                 f"{o['noise']:.4f}: the expected winner's curse of {o['rates']} equally good rates, the noise "
                 "overestimated by the configuration × rate residual)") if o else ""
        how = (f"each configuration at the rate with its lowest mean {metric}, chosen on the same runs that are "
               f"reported (one seed: nothing to cross-fit). **This view is optimistic**{bound}, and more so for "
               "configurations whose rates are about equally good; train two or more seeds (`--seeds`) for "
               "estimates on runs that did not choose the rate.")
    out = [f"{h} Learning rate: each configuration at its own best rate", "",
           f"`lr` is swept ({rates}); every configuration was trained at each rate. **The ranking, the could-be-best "
           f"set, the effects, interactions and variance shares in this summary are the tuned view**: {how} "
           "effects_by_lr.csv has the effects at each rate alone.", "", md_table(pd.DataFrame(rows)), ""]
    if tuned.diverged_at_choice:
        out += [f"- {tuned.diverged_at_choice} (configuration, seed) value(s) are missing from the tuned view: the run "
                "at the rate chosen on the other seeds diverged.", ""]
    top = []
    for rate in tuned.rates:  # the ranking at each rate alone
        col = tuned.by_rate[rate].dropna().sort_values() if rate in tuned.by_rate else pd.Series(dtype=float)
        names = []
        for arch, value in col.head(3).items():
            rows_of = df[(tuned.architecture == arch) & (df["lr"] == rate)] if "lr" in df else df.iloc[:0]
            names.append(f"{label(rows_of.iloc[0]) if len(rows_of) else arch[:8]} ({value:.4f})")
        top.append(f"- at lr {rate:g}: {', '.join(names)}")
    out += ["The three best configurations at each rate alone (mean " + metric + "):", "", *top, ""]
    edges = {tuned.rates[0]: "smallest", tuned.rates[-1]: "largest"}
    for rate, which in edges.items():
        n = int(counts.get(rate, 0))
        if n:
            out += [f"- {n} of {len(tuned.chosen)} configurations are best at the {which} rate swept ({rate:g}): their "
                    "own optimum may lie beyond it; widen `--lrs` to know.", ""]
    if by_rate is not None and len(by_rate) and eff is not None and "holds at every lr" in eff:
        pivot = by_rate.pivot_table(index=["hyperparameter", "from", "to"], columns="lr", values="mean difference",
                                    aggfunc="first")
        pivot.columns = [f"mean difference at lr {c:g}" for c in pivot.columns]
        table = pivot.reset_index().merge(eff[["hyperparameter", "from", "to", "mean difference",
                                                "holds at every lr"]].rename(
            columns={"mean difference": "tuned mean difference"}), on=["hyperparameter", "from", "to"], how="left")
        verdict = table["holds at every lr"].fillna("no")
        held = [f"`{k}` ({v})" for k, v in zip(table["hyperparameter"], verdict) if v != "no"]
        out += ["Effects per rate (mean matched-pair difference at each rate alone) against the tuned view:", "",
                md_table(table), "",
                f"- Holds at every rate (its 95 % interval excludes zero on the same side at each rate: a zero effect "
                f"passes this in at most 5 % of sweeps): {', '.join(held) or 'none'}.",
                "- For the others the runs do not show an effect that holds at every rate; a sign that merely "
                "agrees at every rate is no finding (a zero effect does so at three rates a quarter of the time).",
                ""]
    return out


def _ngram_reference(refs: dict[str, Any] | None, h: str) -> list[str]:
    if not refs:
        return []
    test = refs.get("test")
    where = "the validation split" if test else "the held-out 10 %"
    out = [f"{h} Reference: byte n-gram cross-entropies of the corpus ({refs['dataset']}, {where})", "",
           "A loss means little without these: a run above the trigram line has learned less than "
           "counting byte triples does.", ""]
    if not test:
        out += [f"- {name}: {v:.4f} nats/byte ({v / math.log(2):.3f} bits/byte)"
                for name, v in refs["nats per byte"].items()]
        return out + [""]
    rows = [{"model": name, "validation (nats/byte)": f"{v:.4f}", "test (nats/byte)": f"{test[name]:.4f}",
             "test - validation": f"{test[name] - v:+.4f}"} for name, v in refs["nats per byte"].items()]
    return out + [md_table(pd.DataFrame(rows)), "",
                  f"The split rule is `{refs.get('split')}`: validation and test should measure the same thing, so "
                  "their n-gram entropies should agree up to noise.", ""]


def _chance_reference(df: pd.DataFrame, task: str, h: str) -> list[str]:
    levels = {m: df[f"chance {m}"].dropna().iloc[0] for m in _task_metrics(df)
              if f"chance {m}" in df and df[f"chance {m}"].notna().any()}
    which = "persistence (predict the current value)" if _is_mackey(task) else "chance"
    kind = df["loss kind"].dropna().iloc[0] if "loss kind" in df and df["loss kind"].notna().any() else "loss"
    out = [f"{h} Reference: {which}", "",
           f"The loss is the task's {kind} on the fixed held-out test set (val loss). A configuration has learned "
           "something only where its interval lies on the right side of this level.", ""]
    out += [f"- {m}: {v:.4f}" for m, v in levels.items()]
    updates = df["optimizer updates"].dropna() if "optimizer updates" in df else pd.Series(dtype=float)
    steps = df["time steps"].dropna() if "time steps" in df else pd.Series(dtype=float)
    if len(updates) and len(steps):
        out.append(f"- time steps per run: {int(steps.median())} (median); optimizer updates per run: "
                   f"{int(updates.min())}–{int(updates.max())}")
    return out + [""]


def _ranking(report: Report, ranked: pd.DataFrame, metric: str, task: str, h: str) -> list[str]:
    what = ("held-out loss" if metric == "val loss"
            else "the minimum of the training moving average: the original study’s metric")
    cbb = report.could_be_best_line()
    out = [f"{h} How sure is the ranking", "",
           f"Configurations are ranked by the mean **{metric}** of their finished runs ({what})"
           + (", each at its best learning rate" if report.tuned is not None else "") + ".", "",
           f"- Best: **{report.best_line()}**", f"- {cbb[0].upper()}{cbb[1:]}. A configuration is kept unless some "
           "other lies below it by more than q/√2 times the standard error of their difference, q the 95 % "
           "quantile of Tukey's studentized range of the judged means (Games–Howell; summary.csv, column "
           "`could be best`). Each configuration's noise is its own where its runs show more than the typical "
           "(moderated, empirical-Bayes) level, never less than its runs show: with 95 % probability no "
           "configuration whose true mean is the lowest is left out, however many are compared and however "
           "unequal their noise."]
    if task != "bytes" and report.chance is not None and len(ranked):
        lower = ranked[f"{metric} ci high"] < report.chance
        better = ranked[f"{metric} mean"] < report.chance
        out.append(f"- Below the {'persistence' if _is_mackey(task) else 'chance'} level "
                   f"({report.chance:.4f}): {int(better.sum())} of {len(ranked)} configurations by their mean; "
                   f"{int(lower.sum())} with the whole 95 % interval below it (configurations with two or more "
                   "runs only; one run gives no interval).")
    if report.noise:
        n = report.noise
        out.append(f"- Seed noise: a configuration's {metric} moves by **{n['seed std']:.4f}** (std across its seeds, "
                   f"{n['configurations']} configurations with replicates, {n['runs per configuration']:.1f} runs "
                   f"each); the configurations' means spread by **{n['between std']:.4f}** (std across "
                   f"configurations). " + ("Differences smaller than the seed noise are not findings."
                                           if n["seed std"] > 0.25 * n["between std"] else ""))
    else:
        out.append("- Seed noise: unknown (every configuration has one run). A difference between two "
                   "configurations may be one seed's luck; the replicate stage measures it.")
    return out + [""]


def _top_ten(df: pd.DataFrame, ranked: pd.DataFrame, metric: str, memory: bool, h: str) -> list[str]:
    top = ranked.head(10).copy()
    top.insert(0, "rank", range(1, len(top) + 1))
    top.insert(1, "configuration", [label(df[df["config id"] == i].iloc[0]) for i in top["id"]])

    top["id"] = top["id"].str[:12]
    shown = [m for m in ("val loss", "val bpb", "min loss") if not (memory and m == "val bpb")]
    task_metrics = _task_metrics(df) if memory else []
    cols = ["rank", "configuration", "tuned lr", "runs", f"{metric} mean", f"{metric} ci low", f"{metric} ci high", "could be best",
            *[f"{m} mean" for m in shown if m != metric and f"{m} mean" in top],
            *[c for c in ("test loss mean", "test loss ci low", "test loss ci high") if c in top and top[c].notna().any()],
            *[f"{m} mean" for m in task_metrics if f"{m} mean" in top and m not in ("cross-entropy", "mse")], "id"]
    return [f"{h} The ten best configurations (by mean {metric}, 95 % t interval over seeds)", "",
            "Letters: I input gate, F forget gate, O output gate, S state gate, N new state, P previous (old) "
            "state, R residual ('.' = off), then layers and state size.", "",
            md_table(top[[c for c in cols if c in top]]), ""]


def _effects(eff: pd.DataFrame | None, metric: str, h: str, words: list[str]) -> list[str]:
    if eff is None or not len(eff):
        return []
    shown = eff.drop(columns=[c for c in ("task",) if c in eff])
    out = [f"{h} Matched-pair effects on {metric} (effects.csv)", "",
           "Each pair: two configurations identical except for one key; its difference is to − from "
           "(negative lowers the loss), the mean of its within-seed differences where the two share seeds. "
           "**median**: the typical pair, with an exact 95 % order-statistic interval (none below 6 pairs). "
           "**mean**: the average over the contexts (settings of the other keys), with a 95 % t interval; it "
           "shows a large change in a few contexts that the median hides. An interval that reaches zero does "
           "not show an effect. **heterogeneous**: the pair differences vary between contexts more than one "
           "common effect allows (F test at 5 %, against seed-to-seed noise where there are replicates, "
           "against the higher-order residual of the two-way model where there are not): the key's effect "
           "depends on the others, and one number does not describe it.", "", md_table(shown), ""]
    if words:
        out += ["Where the effect depends on the context (heterogeneous keys, split by the key that separates "
                "their pair differences most; mean difference per value):", "", *[f"- {w}" for w in words], ""]
    return out


def _interactions(inter: pd.DataFrame | None, var: pd.DataFrame | None, metric: str, h: str) -> list[str]:
    out = []
    if inter is not None and len(inter):
        top = inter.reindex(inter["interaction"].abs().sort_values(ascending=False).index).head(10)
        shown = (top["ci low"] > 0) | (top["ci high"] < 0)
        out += [f"{h} Two-way interactions on {metric} (interactions.csv)", "",
                "The difference of differences: a's effect (from → to) where b is at `b to`, minus where b is at "
                "`b from`, within seeds, averaged over the other keys' settings where all four configurations "
                "exist, with a 95 % t interval over those settings. The ten largest; "
                f"{int(((inter['ci low'] > 0) | (inter['ci high'] < 0)).sum())} of {len(inter)} have an interval "
                f"that excludes zero ({int(shown.sum())} of these ten).", "", md_table(top), ""]
    if var is not None and len(var):
        out += [f"{h} Where the variance between configurations comes from (variance.csv)", "",
                "Type-II sums of squares of the configurations' means (over the seeds they share) as shares of "
                "their total variance: each main effect and two-way interaction, and what is left (higher-order "
                "interactions and seed noise). Intervals from resampling seeds, where there are two or more; "
                "terms the grid cannot separate (such as the residual switch where it is always on) are not "
                "listed.", "", md_table(var.head(12)), ""]
    return out


def _linear(scored: pd.DataFrame, metric: str, h: str) -> list[str]:
    lm = linear_model(scored, metric)
    if lm is None:
        return ["Linear model: too few runs (needs 10) or nothing varies.", ""]
    coef = pd.DataFrame({"hyperparameter": list(lm["coefficients"]), "coefficient": list(lm["coefficients"].values())})
    coef = coef.reindex(coef["coefficient"].abs().sort_values(ascending=False).index)
    return [f"{h} Linear model of {metric} on the standardised hyperparameters", "",
            f"Fitted on {lm['fit runs']} runs; R² on the {lm['held-out runs']} held-out runs: "
            f"**{lm['r2 held out']:.3f}**. A negative coefficient lowers the loss.", "", md_table(coef), ""]


def _runs_list(runs: pd.DataFrame, columns: list[str]) -> str:
    """A table of some runs, each named by its configuration's label."""
    t = runs.copy()
    t["configuration"] = [label(r) for _, r in t.iterrows()]
    t["id"] = t["id"].str[:12]
    return md_table(t[["configuration", *[c for c in columns if c in t], "id"]])


def task_section(df: pd.DataFrame, scored: pd.DataFrame, ranked: pd.DataFrame, below: pd.DataFrame,
                 report: Report, threshold: float, refs: dict[str, Any] | None, diverged: pd.DataFrame,
                 eff: pd.DataFrame | None, task: str = "bytes", level: int = 2, inter: pd.DataFrame | None = None,
                 var: pd.DataFrame | None = None) -> str:
    """One task's part of summary.md: references, how sure the ranking is, the ten best, the
    effects, the linear model, the means per value, the diverged runs and (for bytes) the runs
    below the threshold."""
    h, memory, metric = "#" * level, task != "bytes", report.metric
    out = _ngram_reference(refs, h) + (_chance_reference(df, task, h) if memory else [])
    if not len(scored):
        return "\n".join(out + [f"No finished run with a {metric!r} yet.", ""])
    out += _protocol(scored, ranked, report, h)
    out += [] if memory else memorisation_lines(df, metric, h, refs)
    out += _tuning(report, df, eff, h)
    out += _ranking(report, ranked, metric, task, h)
    out += _top_ten(scored, ranked, metric, memory, h)
    out += _effects(eff, metric, h, report.heterogeneity)
    out += _interactions(inter, var, metric, h)
    out += _linear(scored, metric, h)
    out += [f"{h} Mean {metric} per value of each hyperparameter (over runs)", "",
            md_table(value_means(scored, metric)), ""]
    if len(diverged):
        out += [f"{h} Diverged runs: {len(diverged)} (never ranked, never below the threshold)", "",
                _runs_list(diverged, ["diverged at step"]), ""]
    if not memory:
        out += [f"{h} Runs with {metric} below {threshold:g}: {len(below)}", ""]
        if len(below):
            out += [_runs_list(below, [metric]), ""]
    return "\n".join(out)


def summary_document(results_dir: Path, report: Report, sections: list[tuple[str, str]]) -> str:
    """summary.md: the status, the notes, then each task's section."""
    out = [f"# Sweep summary: {results_dir}", "", f"**Status:** {report.status_line()}", ""]
    if report.verdict:
        out += [f"**Halving:** {report.verdict}", ""]
    if report.messages:
        out += ["Notes:", *[f"- {m}" for m in report.messages], ""]
    if len(sections) > 1 or sections[0][0] != "bytes":
        out += [f"The sweep has {len(sections)} tasks; each is ranked and analysed on its own (its runs are "
                "never compared with another task's).", ""]
        for task, md in sections:
            out += [f"## Task: {task}", "", md]
    else:
        out.append(sections[0][1])
    return "\n".join(out)
