"""The research answers for people: a terminal table, markdown, and one self-contained HTML
file with an SVG chart per question (monitor/research.py computes them; json is its
`to_json`)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..monitor.research import Answer, Research
from .svg_chart import render_svg


def cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _arm_lines(r: Research) -> list[str]:
    out = []
    for arm, a in r.arms.items():
        iqm = a.get("performance_iqm") or {}
        cov = a.get("coverage_min")
        out.append(f"{arm}: performance IQM {cell(iqm.get('point'))} "
                   f"[{cell(iqm.get('lo'))}, {cell(iqm.get('hi'))}] over {a['seeds']} seed(s); "
                   f"coverage min {'n/a' if cov is None else f'{cov:.1%}'}; "
                   f"escaped {a['escaped']}")
    return out


def _head(r: Research) -> str:
    return (f"Experiment {r.experiment}: {', '.join(r.scenarios)}; {len(r.runs)} run(s), "
            f"seeds {', '.join(map(str, r.seeds))}")


def rich_research(r: Research) -> Group:
    parts: list[Any] = [Text(_head(r), style="bold")]
    parts += [Text("  " + line) for line in _arm_lines(r)]
    for a in r.answers:
        parts.append(Text(""))
        parts.append(Text(f"{a.key.upper()}  {a.question}", style="bold"))
        parts.append(Text(("[thin evidence] " if a.thin else "") + a.verdict))
        if a.thin and a.thin_reason:
            parts.append(Text(f"  thin: {a.thin_reason}"))
        table = Table(header_style="bold")
        for c in a.columns:
            table.add_column(c, justify="right" if c not in ("arm", "run", "detector", "agent")
                             else "left")
        for row in a.rows[:50]:
            table.add_row(*(cell(v) for v in row))
        if a.rows:
            parts.append(table)
        parts += [Text(f"  assumes: {s}") for s in a.assumptions]
        parts += [Text(f"  error rates: {s}") for s in a.error_rates]
    return Group(*parts)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_research(r: Research) -> str:
    lines = [f"# {_md(_head(r))}", ""] + [f"- {_md(line)}" for line in _arm_lines(r)]
    for a in r.answers:
        lines += ["", f"## {a.key.upper()}: {_md(a.question)}", "",
                  ("**Thin evidence** (" + _md(a.thin_reason) + "). " if a.thin else "")
                  + _md(a.verdict), ""]
        if a.rows:
            lines.append("| " + " | ".join(_md(c) for c in a.columns) + " |")
            lines.append("|" + "---|" * len(a.columns))
            lines += ["| " + " | ".join(_md(cell(v)) for v in row) + " |" for row in a.rows]
            lines.append("")
        lines += [f"- Assumes: {_md(s)}" for s in a.assumptions]
        lines += [f"- Error rates: {_md(s)}" for s in a.error_rates]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: sans-serif; max-width: 60rem; margin: 2rem auto; color: #222;
       line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
.verdict { font-weight: bold; } .thin { color: #a15c00; }
ul.notes { font-size: .85rem; color: #444; }
"""


def _html_answer(a: Answer) -> str:
    rows = "".join("<tr>" + "".join(
        f'<td class="{"text" if isinstance(v, str) else "num"}">{escape(cell(v))}</td>'
        for v in row) + "</tr>" for row in a.rows)
    table = (f"<table><thead><tr>{''.join(f'<th>{escape(c)}</th>' for c in a.columns)}"
             f"</tr></thead><tbody>{rows}</tbody></table>") if a.rows else ""
    thin = (f'<p class="thin">Thin evidence: {escape(a.thin_reason)}</p>' if a.thin else "")
    notes = "".join(f"<li>Assumes: {escape(s)}</li>" for s in a.assumptions)
    notes += "".join(f"<li>Error rates: {escape(s)}</li>" for s in a.error_rates)
    return (f'<section class="answer" id="{a.key}"><h2>{a.key.upper()}: {escape(a.question)}'
            f'</h2><p class="verdict">{escape(a.verdict)}</p>{thin}'
            f'<figure>{render_svg(a.chart)}</figure>{table}<ul class="notes">{notes}</ul>'
            "</section>")


def html_research(r: Research) -> str:
    """One file: inline style and inline SVG, nothing fetched when it is opened."""
    arms = "".join(f"<li>{escape(line)}</li>" for line in _arm_lines(r))
    runs = "".join(f"<tr><td class=\"text\">{escape(str(run['run_id']))}</td>"
                   f"<td>{escape(cell(run.get('seed')))}</td>"
                   f"<td class=\"text\">{escape(str(run.get('scenario')))}</td>"
                   f"<td>{escape(cell(run.get('agents')))}</td>"
                   f"<td>{escape(cell(run.get('rounds')))}</td></tr>" for run in r.runs)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(_head(r))}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(_head(r))}</h1><ul>{arms}</ul>"
            + "".join(_html_answer(a) for a in r.answers)
            + "<h2>Runs</h2><table><thead><tr><th>run</th><th>seed</th><th>scenario</th>"
              f"<th>agents per arm</th><th>rounds</th></tr></thead><tbody>{runs}</tbody>"
              "</table><p>Generated by tractatus-watch research.</p></body></html>\n")
