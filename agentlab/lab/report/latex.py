"""The paper as a LaTeX document (tables from records, escaped prose), and the TeX engine if one is installed."""

from __future__ import annotations

import shutil
from typing import Any

from agentlab.lab.models import Confirmation, Paired, Record
from agentlab.lab.report.tables import comparison_text, confirmation_text, pct, truncated_cell
from agentlab.lab.view import LiteraturePaper

_TEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(s: Any) -> str:
    return "".join(_TEX_ESC.get(ch, ch) for ch in str(s))


def to_latex(draft: dict[str, Any], records: list[Record], lit: list[LiteraturePaper], *, lab_name: str,
             stop_reason: str | None = None, comparison: Paired | None = None,
             sizing: str = "", confirmation: Confirmation | None = None) -> str:
    """``sizing``: the report split's sizing line (and a demo's banner), after the comparison; ``confirmation``:
    the confirmation on fresh dev problems and the ablation (``final["confirmation"]``)."""
    rows = "\n".join(
        f"{tex(r.technique)} & {r.n} & {r.correct} & {tex(pct(r.accuracy))} & "
        f"[{tex(pct(r.ci_low))}, {tex(pct(r.ci_high))}] & {tex(truncated_cell(r))} \\\\"
        for r in records)
    bib = "\n".join(f"\\bibitem{{p{tex(p.id)}}} {tex(p.title)}. agentlab preprint {tex(p.id)}." for p in lit)
    parts = [
        r"\documentclass{article}", r"\usepackage[margin=1in]{geometry}", r"\usepackage{graphicx}",
        f"\\title{{{tex(draft['title'])}}}", f"\\author{{{tex(lab_name)}}}",
        r"\begin{document}", r"\maketitle",
        r"\begin{abstract}", tex(draft["abstract"]), r"\end{abstract}",
    ]
    if stop_reason:
        parts.append(f"\\textbf{{Incomplete run:}} {tex(stop_reason)}.")
    for name in ("introduction", "method"):
        parts += [f"\\section{{{name.title()}}}", tex(draft[name])]
    parts += [r"\section{Results}", r"\begin{tabular}{lrrrlr}",
              r"Technique & n & Correct & Accuracy & 95\% CI & Cut at max\_tokens \\ \hline", rows,
              r"\end{tabular}"]
    if comparison:
        parts.append(tex(comparison_text(comparison)))
    if sizing:
        parts.append(tex(sizing))
    if confirmation:
        parts += [r"\subsection*{Confirmation and ablation}", tex(confirmation_text(confirmation))]
        parts += _ablation(confirmation)
    parts += [r"\section{Discussion}", tex(draft["discussion"]), r"\section{Conclusion}", tex(draft["conclusion"])]
    if bib:
        parts += [r"\begin{thebibliography}{9}", bib, r"\end{thebibliography}"]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"


def _ablation(conf: Confirmation) -> list[str]:
    """The ablation table: each part of the best node removed in turn (change: ablated minus full, paired)."""
    rows = [r for r in conf.ablation if r.record]
    if not rows:
        return []
    body = "\n".join(f"{tex(r.label)} & {r.record.n} & {r.record.correct} & {tex(pct(r.record.accuracy))} & "
                     + (tex(f"{100 * r.delta:+.1f}") + f" & {r.p_value:.3g}" if r.delta is not None else "- & -")
                     + " \\\\" for r in rows)
    return [r"\begin{tabular}{lrrrrr}", r"Part removed & n & Correct & Accuracy & Change (points) & McNemar p \\ \hline",
            body, r"\end{tabular}"]


def tex_engine() -> str | None:
    for name in ("tectonic", "pdflatex", "xelatex", "lualatex"):
        if shutil.which(name):
            return name
    return None
