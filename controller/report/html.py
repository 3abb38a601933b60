"""The search report: an HTML page with PNG plots, built from trial records (and their curves).

  best-so-far.png   best objective so far vs trial number, every trial's objective by state
  curves.png        validation learning curves of the top trials
  params.png        objective vs each parameter (choices as groups)
and tables of failures and of the best trial's parameters. render() returns files (name → bytes), so
the same report goes to a folder or to the store's report/.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable
from typing import Any

from controller.ledger.trials import TrialRecord, best_of
from controller.report.summary import flat_params, startup_summary
from controller.trial.contract import TrialState

COLORS = {TrialState.OK: "#1f77b4", TrialState.STOPPED: "#ff7f0e", TrialState.FAILED: "#d62728"}
SCORED = (TrialState.OK, TrialState.STOPPED)
TOP = 5


def _figure(**kwargs: Any) -> Any:
    # A Figure of its own, not pyplot's: pyplot keeps every figure in one global registry, which is not safe from
    # threads and holds the figures until closed.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _fig_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _best_so_far_plot(records: list[TrialRecord], label: str) -> bytes:
    fig = _figure(figsize=(8, 4))
    ax = fig.subplots()
    best, xs, ys = -math.inf, [], []
    for r in records:
        if r.objective is not None and r.state in SCORED:
            best = max(best, r.objective)
        if best > -math.inf:
            xs.append(r.tid)
            ys.append(best)
    ax.step(xs, ys, where="post", color="black", label="best so far")
    for state, color in COLORS.items():
        pts = [(r.tid, r.objective if r.objective is not None else 0.0) for r in records if r.state == state]
        if pts:
            tids, objectives = zip(*pts)
            ax.scatter(tids, objectives, s=18, color=color, label=f"{state} ({len(pts)})",
                       marker="x" if state is TrialState.FAILED else "o")
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title(f"best {ys[-1]:.4f}" if ys else "no finished trial yet")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _fig_bytes(fig)


def _curves_plot(records: list[TrialRecord], label: str) -> bytes:
    fig = _figure(figsize=(8, 4))
    ax = fig.subplots()
    top = sorted((r for r in records if r.curve and r.objective is not None), key=lambda r: -(r.objective or 0.0))[:TOP]
    for r in top:
        ys = [math.nan if v is None else v for v in r.curve]
        ax.plot(range(1, len(ys) + 1), ys, label=f"trial {r.tid} ({r.objective:.4f}, {r.state})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"learning curves of the top {len(top)} trials")
    if top:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _fig_bytes(fig)


def _params_plot(records: list[TrialRecord], label: str) -> bytes:
    scored = [r for r in records if r.objective is not None and r.params]
    points = [flat_params(r.params) for r in scored]  # a conditional group's option and its own parameters
    names = list(dict.fromkeys(name for p in points for name in p))
    cols = 4
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(figsize=(4 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        values = [p.get(name) for p in points]
        ys = [r.objective for r in scored]
        is_num = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in values]
        title = name
        if any(is_num) and all(n or v is None for n, v in zip(is_num, values)) and len(set(values)) > 6:
            # A conditional number (None when its branch is off): plot the numbers, count the Nones.
            pts = [(v, y, r.state) for v, y, r, n in zip(values, ys, scored, is_num) if n]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, c=[COLORS.get(p[2], "gray") for p in pts])
            nones = len(values) - len(pts)
            title = f"{name} ({nones} × None)" if nones else name
        elif all(is_num):
            ax.scatter(values, ys, s=12, c=[COLORS.get(r.state, "gray") for r in scored])
        else:
            groups = sorted({repr(v) for v in values})
            for i, g in enumerate(groups):
                gy = [y for v, y in zip(values, ys) if repr(v) == g]
                ax.scatter([i] * len(gy), gy, s=12, alpha=0.7)
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([g.strip("'") for g in groups], fontsize=7, rotation=20)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{label} vs each parameter")
    fig.tight_layout()
    return _fig_bytes(fig)


def objective_label(records: Iterable[TrialRecord]) -> str:
    """The plots' axis: "objective", with the name the trial program gave it (result.json's objective_name: the
    CIFAR trainer's "val_fine_accuracy (best epoch)", a LightGBM program's "negated log-loss"), if any."""
    name = next((r.metrics["objective_name"] for r in records if isinstance(r.metrics.get("objective_name"), str)),
                None)
    return f"objective ({name[:60]})" if name else "objective"


def _table(rows: Iterable[Iterable[Any]], header: Iterable[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(records: Iterable[TrialRecord], search: str) -> dict[str, bytes]:
    """The report's files (index.html and its PNG plots) for a search's records."""
    recs = sorted(records, key=lambda r: r.tid)
    best = best_of(recs)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.state] = counts.get(r.state, 0) + 1
    failures = [(r.tid, r.reason or "") for r in recs if r.state is TrialState.FAILED]
    label = objective_label(recs)
    files = {"best-so-far.png": _best_so_far_plot(recs, label), "curves.png": _curves_plot(recs, label),
             "params.png": _params_plot(recs, label)}
    best_html = "<p>No finished trial with an objective yet.</p>"
    if best is not None:
        test_acc = best.metrics.get("test_fine_accuracy")
        test = f", test fine accuracy {test_acc:.4f}" if test_acc is not None else ""
        best_html = (f"<p>Trial {best.tid}: objective <b>{best.objective:.4f}</b> ({best.state}{test})</p>"
                     + _table(sorted(best.params.items()), ["parameter", "value"]))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>cifar-hpo: {html.escape(search)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}} img{{max-width:100%}}</style></head><body>
<h1>Search {html.escape(search)}</h1>
<p>{len(recs)} trials: {html.escape(', '.join(f'{v} {k}' for k, v in sorted(counts.items())))}</p>
<p>{html.escape(startup_summary(r.metrics for r in recs) or "No trial has recorded its start-up yet.")}</p>
<h2>Best trial</h2>{best_html}
<h2>Best so far</h2><img src="best-so-far.png" alt="best objective so far vs trial">
<h2>Learning curves</h2><img src="curves.png" alt="learning curves of the top trials">
<h2>Objective vs parameters</h2><img src="params.png" alt="objective vs each parameter">
<h2>Failures ({len(failures)})</h2>{_table(failures, ["trial", "reason"]) if failures else "<p>None.</p>"}
</body></html>"""
    files["index.html"] = page.encode()
    return files
