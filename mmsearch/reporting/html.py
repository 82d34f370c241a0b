"""The report as one self-contained HTML page: inline CSS, figures as PNG data URIs, no script, no
external link, so it opens offline and from an e-mail attachment alike. Every value from the
experiment is escaped (trial ids, column names and errors are user data)."""
from __future__ import annotations

import math
import numbers
import time
from html import escape

import pandas as pd

from . import Report, plots
from .attribution import MIN_PER_ARM, MIN_TRIALS_IMPORTANCE, N_BOOTSTRAP, TOO_FEW, trick_importance

SECTIONS = {  # id -> heading: the page's table of contents, in order
    "summary": "Summary",
    "leaderboard": "Leaderboard",
    "curves": "Learning curves",
    "attribution": "Trick attribution",
    "ensemble": "The ensemble",
    "modalities": "Per modality",
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 1100px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; } .meta { color: #666; margin: 0 0 8px; }
p.note { color: #444; max-width: 860px; } p.warn { background: #fff4e0; border-left: 4px solid #f0a030; padding: 6px 10px; }
.scroll { display: inline-block; max-width: 100%; box-sizing: border-box; overflow-x: auto; max-height: 480px; overflow-y: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 12.5px; } th, td { padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #f4f6f8; position: sticky; top: 0; } tr:nth-child(even) td { background: #fafafa; }
table.kv td { white-space: normal; } table.kv td:first-child { white-space: nowrap; color: #555; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } img { max-width: 100%; display: block; margin: 8px 0; }
"""


def render(rep: Report) -> str:
    exp = rep.experiment
    parts = [f"<h1>mmsearch report: {escape(exp.path.name)}</h1>",
             f"<p class='meta'>{escape(str(exp.path))} &middot; written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} "
             f"&middot; {len(exp.trials)} trials, {len(exp.scored)} with a score</p>",
             "<nav>" + "".join(f"<a href='#{k}'>{v}</a>" for k, v in SECTIONS.items()) + "</nav>"]
    for key, body in (("summary", _summary(rep)), ("leaderboard", _leaderboard(rep)), ("curves", _curves(rep)),
                      ("attribution", _attribution(rep)), ("ensemble", _ensemble(rep)), ("modalities", _modalities(rep))):
        parts.append(f"<section id='{key}'><h2>{SECTIONS[key]}</h2>{body}</section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>mmsearch report: {escape(exp.path.name)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


# -- sections -----------------------------------------------------------------------------------
def _summary(rep: Report) -> str:
    return _table(rep.summary, header=False)


def _leaderboard(rep: Report) -> str:
    exp = rep.experiment
    return (_note(f"Every trial, best val {escape(exp.metric)} first. STOPPED: ended early by the scheduler (its "
                  "scores are its last epoch's); INCOMPLETE: no final checkpoint yet and no Tune state to say why "
                  "(still running, or interrupted). Holdout scores are shown for reading only: nothing was chosen on them.")
            + _table(rep.leaderboard))


def _curves(rep: Report) -> str:
    figure = plots.curves(rep.experiment)
    if not figure:
        return _warn("No trial has reported an epoch yet.")
    return _note(f"The val {escape(rep.experiment.metric)} each trial reported after each epoch (the best in dark blue). "
                 "Dashed, ending in an x: stopped early by the scheduler (ASHA); dotted, ending in a circle: not finished "
                 "(running, or interrupted); a lone point: a member fitted once (trees, the linear probe) or a trial one epoch in.") + _figure(figure, "learning curves")


def _attribution(rep: Report) -> str:
    exp, table = rep.experiment, rep.tricks
    out = [_note(f"Marginal effect: the mean val {escape(exp.metric)} of the trials with a trick on minus those with it "
                 f"off, with a percentile-bootstrap 95 % interval ({N_BOOTSTRAP} resamples, seeded). It ignores the "
                 "other choices, so a trick the search only tried with a better model looks better than it is: the "
                 "PED-ANOVA importance below looks at every searched dimension at once. Trials stopped early count "
                 "with their last epoch's score.")]
    scored = len(exp.scored)
    too_few = scored < 2 * MIN_PER_ARM or table["verdict"].str.startswith(TOO_FEW).any()
    if table["effect"].isna().all() and too_few:
        out.append(_warn(f"Too few trials for a conclusion: an interval needs at least {MIN_PER_ARM} scored trials with "
                         f"a trick on and {MIN_PER_ARM} with it off, and no trick has them yet ({scored} scored "
                         f"trial{'' if scored == 1 else 's'}). Run more trials: <code>mmsearch resume {escape(str(exp.path))} --more N</code>."))
    elif table["effect"].notna().any():
        out.append(_figure(plots.effects(table, exp.metric, exp.higher_is_better), "trick effects"))
    shares = trick_importance(rep.importance)
    shown = table.assign(importance=[shares.get(t) for t in table["trick"]]) if shares else table
    out.append(_table(shown) if len(shown) else _warn("No trick was on in any trial: nothing to attribute."))
    out.append("<h3>Importance of every searched dimension (Optuna PED-ANOVA)</h3>")
    if rep.importance.empty:
        out.append(_warn(f"Too few trials for an importance estimate: it needs {MIN_TRIALS_IMPORTANCE} scored trials "
                         f"and a dimension that varies; this experiment has {len(exp.scored)}."))
    else:
        out.append(_note("How much each dimension separates the best trials from the rest (shares summing to 1), "
                         "with the others varying as they did; a trick's own settings count only in the trials where it "
                         "is on. The trick table's importance column adds a trick's switch and settings."))
        out.append(_figure(plots.importances(rep.importance), "importance") + _table(rep.importance))
    return "".join(out)


def _ensemble(rep: Report) -> str:
    exp = rep.experiment
    if not exp.ensemble:
        return _warn(f"No ensemble yet: build one with <code>mmsearch ensemble {escape(str(exp.path))}</code>.")
    s = exp.ensemble["scores"]
    lines = pd.DataFrame([
        {"": f"ensemble ({s['ensemble']['members']} members, {exp.ensemble['method']})", "val": s["ensemble"]["val"], "holdout": s["ensemble"]["holdout"]},
        {"": f"best single trial ({s['best_single']['trial_id']})", "val": s["best_single"]["val"], "holdout": s["best_single"]["holdout"]},
        {"": f"uniform average ({s['uniform']['members']} trials)", "val": s["uniform"]["val"], "holdout": s["uniform"]["holdout"]},
    ])
    return (_note(f"Members chosen on val only; holdout is the honest score. Contribution: the ensemble's val "
                  f"{escape(exp.metric)} with the member removed and the other weights renormalised (a change for the worse "
                  "means the member earns its place).")
            + _table(lines) + _figure(plots.members(rep.ensemble, exp.metric), "ensemble members") + _table(rep.ensemble))


def _modalities(rep: Report) -> str:
    exp, out = rep.experiment, []
    if len(rep.modalities) > 1:
        out.append(_note("Trials that read one modality (or a few) next to the fused ones ('all')."))
        out.append(_figure(plots.modalities(exp), "modalities") + _table(rep.modalities))
    if not rep.gblend.empty:
        out.append(_note("G-Blend: the weight each head's loss got in each trial's latest epoch (heads that generalise "
                         "better get more)."))
        out.append(_figure(plots.gblend(rep.gblend), "G-Blend weights") + _table(rep.gblend))
    return "".join(out) or _warn("Nothing per modality here: every trial read all modalities and none used G-Blend.")


# -- pieces -------------------------------------------------------------------------------------
def _note(text: str) -> str:
    return f"<p class='note'>{text}</p>"


def _warn(text: str) -> str:
    return f"<p class='warn'>{text}</p>"


def _figure(data_uri: str | None, alt: str) -> str:
    return f"<img src='{data_uri}' alt='{escape(alt)}'>" if data_uri else ""


def _table(df: pd.DataFrame, *, header: bool = True) -> str:
    if df.empty:
        return _warn("Nothing to show yet.")
    head = "<tr>" + "".join(f"<th>{escape(str(c))}</th>" for c in df.columns) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(_cell(c, v) for c, v in zip(df.columns, row)) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<div class='scroll'><table{'' if header else ' class=kv'}>{head}{body}</table></div>"


def _cell(column, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td class='num'>&ndash;</td>"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or type(value).__name__ == "bool_":
        return f"<td>{escape(str(value))}</td>"
    if isinstance(value, numbers.Integral):
        return f"<td class='num'>{value}</td>"
    return f"<td class='num'>{value:{_float_format(str(column))}}</td>"


def _float_format(column: str) -> str:
    """Scores to 4 decimals (so they line up), seconds whole, anything else (a learning rate, a
    trick's setting) to 4 significant digits."""
    if column.endswith("time_s"):
        return ".0f"
    if column == "weight" or column.startswith("w_"):
        return ".3f"
    scores = ("val", "holdout", "best", "mean", "effect", "ci_", "importance", "change", "ensemble")
    return ".4f" if column.startswith(scores) or column in ("", "val", "holdout") else ".4g"
