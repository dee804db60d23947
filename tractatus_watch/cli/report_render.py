"""The Demo 2 table, rendered from a metrics Report as a rich table, Markdown or rows per arm."""

from __future__ import annotations

from typing import Any, Callable

import polars as pl
from rich.table import Table
from rich.text import Text

from ..monitor.report import (GOVERNED, PENALIZED, UNGOVERNED, UNGOVERNED_LISTED, ArmMetrics,
                              Report)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _signed(v: float | int | None, fmt: Callable[[Any], str]) -> str:
    if v is None:
        return ""
    return ("+" if v > 0 else "") + fmt(v)


def _stability(m: ArmMetrics) -> str:
    if m.stability is None:
        return "n/a"
    # Steadiness relative to the reward level: a std under 5% of the mean reads as consistent.
    word = ("consistent" if m.performance and m.stability <= 0.05 * abs(m.performance)
            else "variable")
    return f"{word} (sd {m.stability:.3f})"


def rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows: Metric | <arm>... | Difference (governed - ungoverned)."""
    order = [a for a in (UNGOVERNED, PENALIZED, GOVERNED) if a in report.arms] \
        or list(report.arms)
    arms = [report.arms[a] for a in order]
    diff = report.difference()
    gap = report.gap

    def perf(m: ArmMetrics) -> str:
        if m.performance is None:
            return "n/a"
        ci = (f" [{m.performance_lo:.3f}, {m.performance_hi:.3f}]"
              if m.performance_lo is not None and m.performance_hi is not None
              and abs(m.performance_hi) != float("inf") else "")
        return f"{m.performance:.3f}{ci}"

    perf_diff = ""
    if gap is not None and diff:
        rel = f" ({gap.relative * 100:+.1f}%)" if gap.relative is not None else ""
        ci = (f" [{gap.lo:+.3f}, {gap.hi:+.3f}]" if abs(gap.lo) != float("inf") else "")
        perf_diff = f"{gap.absolute:+.3f}{rel}{ci}"
    table: list[list[str]] = [
        [f"Performance (mean reward, last {max(m.performance_rounds for m in arms)} rounds)",
         *[perf(m) for m in arms], perf_diff],
        ["Performance (whole run)", *[_num(m.performance_all) for m in arms],
         _signed(diff.get("performance_all"), lambda v: f"{v:.3f}")],
        ["Governance coverage", *[_pct(m.coverage) for m in arms],
         _signed(diff.get("coverage"), lambda v: f"{v * 100:.1f} pts")],
        *([["Witnessed coverage (gateway)", *[_pct(m.witnessed_coverage) for m in arms], ""],
           ["Ungoverned actions (witnessed, no decision)",
            *[str(m.ungoverned_actions) if m.witnessed else "n/a" for m in arms], ""]]
          if any(m.witnessed for m in arms) else []),
        ["Constraint violations (escaped)", *[str(m.escaped_violations) for m in arms],
         _signed(diff.get("escaped_violations"), str)],
        # A penalized arm's escapes are its design: each ran and cost the penalty.
        *([["Penalized (ran, cost the penalty: escapes by design)",
            *[str(m.penalized) if m.mode == "penalize" or m.penalized else "" for m in arms],
            ""]] if any(m.mode == "penalize" or m.penalized for m in arms) else []),
        ["Blocked", *[str(m.blocked) for m in arms], _signed(diff.get("blocked"), str)],
        ["Would have blocked (shadow verdicts)", *[str(m.would_have_blocked) for m in arms], ""],
        ["Attempted violations", *[str(m.attempted) for m in arms], ""],
        ["Evasions (shadow auditor)", *[str(m.evasions) for m in arms], ""],
        ["Strategy (most executed)", *[m.strategy or "n/a" for m in arms], ""],
        ["Training stability", *[_stability(m) for m in arms],
         _signed(diff.get("stability"), lambda v: f"{v:.3f}")],
        ["Governance latency p50 / p99 (us)",
         *[f"{_num(m.latency_p50_us, 0)} / {_num(m.latency_p99_us, 0)}" for m in arms], ""],
        ["Rounds", *[str(m.rounds) for m in arms], ""],
        ["Actions", *[str(m.actions) for m in arms], ""],
    ]
    header = ["Metric", *[m.arm.capitalize() for m in arms]]
    if diff:
        header.append("Difference")
    else:
        table = [r[:-1] for r in table]
    return header, table


def ungoverned_lines(report: Report, limit: int = 20) -> list[str]:
    """The ungoverned actions as lines for the terminal, oldest first, at most `limit`."""
    items = report.ungoverned
    lines = [f"round {u['round']}  {u['arm']}/{u['agent_id'] or '?'}  {u['tool'] or '?'}  "
             f"rollout {u['rollout_id']} (call {u['idx']} of model request {u['position']})"
             for u in items[:limit]]
    total = sum(m.ungoverned_actions for m in report.arms.values())
    if total > len(lines):
        lines.append(f"... and {total - len(lines)} more (`report --format json` lists up to "
                     f"{UNGOVERNED_LISTED})")
    return lines


def rich_table(report: Report) -> Table:
    """The table for the terminal; every text is Text, so a run id or a strategy that looks
    like markup (`[bold]`, `:x:`) is shown as it is."""
    header, body = rows(report)
    title = f"run {report.run_id}" + (f" vs baseline {report.baseline_run}"
                                       if report.baseline_run else "")
    table = Table(title=Text(title), header_style="bold")
    for i, name in enumerate(header):
        table.add_column(Text(name), justify="left" if i == 0 else "right", overflow="fold")
    for r in body:
        table.add_row(*(Text(cell) for cell in r))
    return table


def agent_rows_text(report: Report) -> tuple[list[str], list[list[str]]] | None:
    """The per-agent breakdown (header, rows), shown when some arm has more than one agent."""
    per_arm: dict[str, int] = {}
    for a in report.agents:
        per_arm[a["arm"]] = per_arm.get(a["arm"], 0) + 1
    if not per_arm or max(per_arm.values()) < 2:
        return None
    # Narrow enough for 80 columns; evasions per agent are in `--format json`.
    header = ["Agent", "Actions", "Coverage", "Blocked", "Escaped", "Reward", "Share"]
    body = [[f"{a['arm']}/{a['agent_id']}", str(a["actions"]), _pct(a["coverage"]),
             str(a["blocked"]), str(a["escaped"]), _num(a["reward_mean"]),
             _pct(a["audience_share"])] for a in report.agents]
    return header, body


def agent_table(report: Report) -> Table | None:
    shown = agent_rows_text(report)
    if shown is None:
        return None
    table = Table(title=Text("per agent (share: of the arm's audience, by reward)"),
                  header_style="bold")
    for i, name in enumerate(shown[0]):
        table.add_column(Text(name), justify="left" if i == 0 else "right", overflow="fold")
    for r in shown[1]:
        table.add_row(*(Text(cell) for cell in r))
    return table


def _md_cell(text: str) -> str:
    # A pipe would end the cell; a newline would end the row.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in body]


def markdown(report: Report) -> str:
    lines = _md_table(*rows(report))
    agents = agent_rows_text(report)
    if agents is not None:
        lines += ["", *_md_table(*agents)]
    return "\n".join(lines) + "\n"


def arm_rows(report: Report) -> pl.DataFrame:
    """One row per arm, with the keys of `report --format json`'s arms (and `arm`), for csv,
    ndjson and parquet."""
    arms = report.to_json()["arms"]
    records = [{"arm": name, **figures} for name, figures in arms.items()]
    return pl.DataFrame(records, infer_schema_length=None)
