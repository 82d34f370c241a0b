"""The report's figures, drawn by matplotlib and embedded as PNG data URIs.

Why matplotlib: well kept, draws offline to a PNG with no script at all, so the page stays one
small file that any browser opens (plotly would inline ~4 MB of JavaScript per page). Figures are
built on `matplotlib.figure.Figure` (the Agg canvas), never pyplot: no global state, no display.
Each function returns None when there is nothing to draw.
"""
from __future__ import annotations

import base64
import io
import math

import pandas as pd

from .collect import Experiment

DPI = 100
WIDTH = 8.0        # inches; the page's column is ~800 px
TOP_LABELLED = 5   # learning curves named in the legend: the best few
BEST, OTHER, GOOD, BAD, MUTED = "#1f77b4", "#7f9fbf", "#2ca02c", "#d62728", "#999999"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    return fig, fig.subplots()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="both", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def curves(exp: Experiment) -> str | None:
    """Val metric per epoch, one line per trial: the best few named, trials ASHA stopped dashed and
    ending in an x, trials still running ending in an open circle."""
    key = f"val_{exp.metric}"
    drawn = [t for t in exp.trials if any(key in r for r in t.curve)]
    if not drawn:
        return None
    fig, ax = _figure(4.2)
    for rank, t in reversed(list(enumerate(drawn))):  # the best last, on top
        epochs = [r["epoch"] for r in t.curve if key in r]
        values = [r[key] for r in t.curve if key in r]
        stopped, running = t.state == "STOPPED", t.state in ("RUNNING", "INCOMPLETE", "PENDING")
        style = dict(color=BEST if rank == 0 else OTHER if rank < TOP_LABELLED else MUTED,
                     linewidth=2.2 if rank == 0 else 1.2, alpha=1.0 if rank < TOP_LABELLED else 0.6,
                     linestyle="--" if stopped else ":" if running else "-")
        ax.plot(epochs, values, marker="o" if len(values) == 1 else None, markersize=4, zorder=3 if rank == 0 else 2,
                label=f"{t.trial_id} ({t.val:.3f})" if rank < TOP_LABELLED and t.val is not None else None, **style)
        end = "x" if stopped else "o" if running else None
        if end:
            ax.plot(epochs[-1:], values[-1:], marker=end, linestyle="", color=style["color"], markersize=6,
                    markerfacecolor="none" if running else style["color"], zorder=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {exp.metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    from matplotlib.lines import Line2D

    handles = ax.get_legend_handles_labels()[0][::-1]  # drawn worst first: the best first here
    handles += [Line2D([], [], color=MUTED, linestyle="--", marker="x", label="stopped early (ASHA)"),
                Line2D([], [], color=MUTED, linestyle=":", marker="o", markerfacecolor="none", label="still running")]
    ax.legend(handles=handles, fontsize=8, loc="best", frameon=False)
    _style(ax)
    return _png(fig)


def effects(table: pd.DataFrame, metric: str, higher_is_better: bool) -> str | None:
    """Each trick's effect on the val metric with its 95 % interval; tricks with too few trials
    listed but without a bar."""
    if table.empty:
        return None
    fig, ax = _figure(0.9 + 0.38 * len(table))
    rows = table.iloc[::-1].reset_index(drop=True)
    better = 1 if higher_is_better else -1
    for y, r in rows.iterrows():
        if r["effect"] is None or pd.isna(r["effect"]):
            ax.text(0, y, "too few trials", va="center", ha="center", fontsize=8, color=MUTED)
            continue
        low, high = sorted((r["ci_low"], r["ci_high"]))
        color = GOOD if min(low * better, high * better) > 0 else BAD if max(low * better, high * better) < 0 else MUTED
        ax.errorbar(r["effect"], y, xerr=[[r["effect"] - low], [high - r["effect"]]], fmt="o", color=color,
                    capsize=4, markersize=6, linewidth=2)
    ax.axvline(0, color="#444444", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{r.trick}  ({r.on} on / {r.off} off)" for r in rows.itertuples()])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(f"effect on val {metric} (on - off), 95 % bootstrap interval; "
                  f"{'right' if higher_is_better else 'left'} is better")
    _style(ax)
    return _png(fig)


def importances(table: pd.DataFrame, limit: int = 15) -> str | None:
    if table.empty:
        return None
    top = table.head(limit).iloc[::-1]
    fig, ax = _figure(0.9 + 0.32 * len(top))
    colors = [BEST if isinstance(t, str) else OTHER for t in top["trick"]]
    ax.barh(range(len(top)), top["importance"], color=colors)
    ax.set_yticks(range(len(top)), top["dimension"])
    ax.set_xlabel("PED-ANOVA importance (share of the total; tricks in dark blue)")
    _style(ax)
    return _png(fig)


def members(table: pd.DataFrame, metric: str) -> str | None:
    """Each member's weight, and how the ensemble's val score changes without it."""
    if table.empty:
        return None
    fig, ax = _figure(0.9 + 0.36 * len(table))
    rows = table.iloc[::-1].reset_index(drop=True)
    ax.barh(range(len(rows)), rows["weight"], color=BEST)
    ax.set_yticks(range(len(rows)), rows["trial"])
    ax.set_xlabel("weight in the ensemble")
    for y, r in rows.iterrows():
        change = r["change_without"]
        if change is not None and not pd.isna(change):
            ax.text(r["weight"], y, f"  without it: {change:+.4f} val {metric}", va="center", fontsize=8)
    ax.set_xlim(0, 1)  # the notes may run past the axis: the saved figure grows to hold them
    _style(ax)
    return _png(fig)


def modalities(exp: Experiment) -> str | None:
    """Every scored trial's val metric, grouped by the modalities it read."""
    groups: dict[str, list[float]] = {}
    for t in exp.scored:
        groups.setdefault(str(t.config.get("model.modalities", "all")), []).append(t.val)
    if len(groups) < 2:
        return None
    names = sorted(groups, key=lambda g: (g != "all", g))
    fig, ax = _figure(0.9 + 0.45 * len(names))
    for y, name in enumerate(names):
        values = groups[name]
        jitter = [(i % 5 - 2) * 0.06 for i in range(len(values))]
        ax.scatter(values, [y + j for j in jitter], color=BEST if name == "all" else OTHER, s=28, zorder=3)
    ax.set_yticks(range(len(names)), [f"{n} ({len(groups[n])})" for n in names])
    ax.set_xlabel(f"val {exp.metric} of each trial ('all': fused)")
    _style(ax)
    return _png(fig)


def gblend(table: pd.DataFrame) -> str | None:
    """The G-Blend weight of each head, per trial (stacked to 1 when the weights are normalised)."""
    if table.empty:
        return None
    heads = [c for c in table.columns if c.startswith("w_")]
    fig, ax = _figure(0.9 + 0.36 * len(table))
    left = [0.0] * len(table)
    for i, head in enumerate(heads):
        values = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in table[head]]
        ax.barh(range(len(table)), values, left=left, label=head[2:], color=f"C{i}")
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(len(table)), table["trial"])
    ax.set_xlabel("G-Blend weight per head (latest epoch)")
    ax.legend(fontsize=8, frameon=False, ncols=len(heads), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    _style(ax)
    return _png(fig)
