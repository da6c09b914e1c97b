"""Verified reports: results table and figures from harness records, a claim checker, Markdown/LaTeX/PDF.

Numbers come from the harness, never from the LLM. A *record* here is the lab's normalized view of an
evaluation summary (see ``agentlab.lab.experiments.normalize_record``): record_id, job_id, benchmark,
split, technique, spec_hash, model, n, correct, accuracy, ci_low, ci_high, tokens_per_problem.

The claim checker finds the result-like numbers in prose (percentages, proportions written as
decimals, ``x/y`` and ``x out of y``) and compares them with the values the records support
(accuracies, interval bounds, counts, differences, p-values, spec settings). A claim that matches
nothing is fixed (when its sentence names exactly one technique with a record, the number is
replaced by that record's value in the same format) or its sentence is removed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

# -- tables -------------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def results_table(records: list[dict[str, Any]], ids: bool = True) -> str:
    """Markdown table of records (one row per record), generated, never written by an agent.

    ``ids=False`` leaves out the record and job ids (hex strings: many prompt tokens, nothing a reviewer
    needs), for prompts."""
    head = "| Technique | Split | n | Correct | Accuracy | 95% CI | Tokens/problem |" + \
           (" Record | Job |" if ids else "") + "\n|---|---|---:|---:|---:|---|---:|" + ("---|---|" if ids else "") + "\n"
    rows = []
    for r in records:
        ci = f"[{pct(r.get('ci_low'))}, {pct(r.get('ci_high'))}]" if r.get("ci_low") is not None else "-"
        tpp = r.get("tokens_per_problem")
        rows.append(f"| {r.get('technique', '?')} | {r.get('split', '?')} | {r.get('n', '?')} | {r.get('correct', '?')}"
                    f" | {pct(r.get('accuracy'))} | {ci} | {'-' if tpp is None else f'{tpp:.0f}'} |"
                    + (f" `{r.get('record_id', '-')}` | `{r.get('job_id', '-')}` |" if ids else ""))
    return head + "\n".join(rows) + "\n"


def comparison_text(comp: dict[str, Any] | None) -> str:
    if not comp:
        return ""
    p = comp.get("p_value")
    return (f"Paired comparison on the same {comp.get('n', '?')} problems (exact McNemar test): "
            f"{comp.get('wins', '?')} wins, {comp.get('losses', '?')} losses, "
            f"difference {100 * (comp.get('delta') or 0):+.1f} percentage points, "
            f"p = {'-' if p is None else f'{p:.3g}'}.")


def results_summary(final: dict[str, Any]) -> str:
    """One line per record for prompts: the only numbers an agent is shown."""
    parts = []
    for key in ("technique", "baseline"):
        r = final.get(key)
        if r:
            parts.append(f"{r['technique']} ({key}): accuracy {pct(r['accuracy'])} ({r['correct']}/{r['n']})")
    if final.get("comparison"):
        parts.append(comparison_text(final["comparison"]))
    return "; ".join(parts) or "no results"


# -- figures ------------------------------------------------------------------------------------


def accuracy_figure(records: list[dict[str, Any]], dev_records: list[dict[str, Any]], path: Path) -> Path | None:
    """PNG: accuracy with 95% CI per technique on the report split, and accuracy per dev iteration."""
    if not records and not dev_records:
        return None
    import hashlib

    key = hashlib.sha256(json.dumps([records, dev_records], sort_keys=True, default=str).encode()).hexdigest()
    stamp = path.with_suffix(".sha256")
    if path.is_file() and stamp.is_file() and stamp.read_text() == key:
        return path  # same records as the last render (a revision round): reuse the figure
    path = _render_accuracy_figure(records, dev_records, path)
    stamp.write_text(key)
    return path


def _render_accuracy_figure(records: list[dict[str, Any]], dev_records: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if dev_records else 1, figsize=(9 if dev_records else 5, 3.5), squeeze=False)
    ax = axes[0][0]
    if records:
        names = [r["technique"] for r in records]
        acc = [r["accuracy"] for r in records]
        lo = [max(0.0, r["accuracy"] - (r.get("ci_low") if r.get("ci_low") is not None else r["accuracy"])) for r in records]
        hi = [max(0.0, (r.get("ci_high") if r.get("ci_high") is not None else r["accuracy"]) - r["accuracy"]) for r in records]
        ax.bar(range(len(names)), acc, yerr=[lo, hi], capsize=4, color=["#4c72b0", "#999999"][: len(names)])
        ax.set_xticks(range(len(names)), names, rotation=10, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("held-out report split (95% CI)", fontsize=9)
    if dev_records:
        ax2 = axes[0][1]
        ax2.plot(range(1, len(dev_records) + 1), [r["accuracy"] for r in dev_records], marker="o")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("experiment")
        ax2.set_title("dev split, per experiment", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- claim checker ------------------------------------------------------------------------------

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_CLAIM = re.compile(
    rf"(?P<ratio>(?P<a>{_NUM})\s*(?:/|out of)\s*(?P<b>{_NUM}))"
    rf"|(?P<pct>(?P<p>{_NUM})\s*(?:%|percent\b|percentage points?\b|pp\b))"
    rf"|(?P<dec>(?<![\w.])(?P<d>0?\.\d+|1\.0+)(?![\w.]))"
)
_SPLIT = re.compile(r"((?<=[.!?])[ \t]+|\n)")


@dataclass
class Claim:
    text: str
    kind: str  # percent | points | decimal | ratio
    value: float
    sentence: str
    status: str = "ok"  # ok | fixed | removed
    replacement: str | None = None


@dataclass
class CheckResult:
    text: str
    claims: list[Claim] = field(default_factory=list)

    @property
    def unmatched(self) -> list[Claim]:
        return [c for c in self.claims if c.status != "ok"]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.claims]


def supported_values(records: Iterable[dict[str, Any]], comparison: dict[str, Any] | None = None,
                     extra: Iterable[float] = ()) -> dict[str, set[float]]:
    """Values a claim may state, as proportions (``share``), counts (``count``) and other numbers."""
    share: set[float] = set()
    delta: set[float] = set()
    count: set[float] = set()
    ratios: set[tuple[float, float]] = set()
    recs = list(records)
    for r in recs:
        for k in ("accuracy", "ci_low", "ci_high"):
            if r.get(k) is not None:
                share.add(float(r[k]))
        if r.get("n") is not None and r.get("correct") is not None:
            ratios.add((float(r["correct"]), float(r["n"])))
            count.update({float(r["n"]), float(r["correct"])})
    for a in recs:  # differences between any two records, in either direction
        for b in recs:
            if a is not b and a.get("accuracy") is not None and b.get("accuracy") is not None:
                delta.add(abs(float(a["accuracy"]) - float(b["accuracy"])))
                if b["accuracy"]:
                    delta.add(abs(float(a["accuracy"]) / float(b["accuracy"]) - 1))  # relative change
    other = {float(x) for x in extra}
    if comparison:
        if comparison.get("delta") is not None:
            delta.add(abs(float(comparison["delta"])))
        if comparison.get("p_value") is not None:
            other.add(float(comparison["p_value"]))
        for k in ("wins", "losses", "n"):
            if comparison.get(k) is not None:
                count.add(float(comparison[k]))
    return {"share": share, "delta": delta, "count": count, "other": other, "ratios": ratios}  # type: ignore[dict-item]


def _tol(text: str) -> float:
    digits = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10 ** (-digits) + 1e-9


def _matches(c: Claim, raw: str, allowed: dict[str, Any]) -> bool:
    if c.kind == "ratio":
        a, b = c.value
        return (a, b) in allowed["ratios"] or (b == 100 and any(abs(100 * s - a) <= 0.5 for s in allowed["share"]))
    tol = _tol(raw)
    if c.kind == "points":  # percentage points: a difference between two records
        return any(abs(100 * s - c.value) <= tol for s in allowed["delta"])
    if c.kind == "percent":
        return any(abs(100 * s - c.value) <= tol for s in allowed["share"] | allowed["delta"])
    # decimal: a proportion (0.45), a difference, a p-value or a spec setting (temperature 0.7)
    return any(abs(s - c.value) <= tol for s in allowed["share"] | allowed["delta"] | allowed["other"])


def _format_like(c: Claim, raw: str, value: float) -> str:
    digits = len(raw.split(".")[1]) if "." in raw else 0
    if c.kind == "percent":
        return f"{100 * value:.{digits}f}%"
    return f"{value:.{max(digits, 2)}f}"


def check_claims(text: str, records: list[dict[str, Any]], comparison: dict[str, Any] | None = None,
                 extra_values: Iterable[float] = (), fix: bool = True) -> CheckResult:
    """Find result-like numbers in ``text`` and check them against the records; fix or remove misses.

    Returns the corrected text and every claim with its status (ok, fixed, removed).
    """
    allowed = supported_values(records, comparison, extra_values)
    by_name = {r["technique"]: r for r in records if r.get("technique")}
    result = CheckResult(text=text)
    out_parts: list[str] = []
    pieces = _SPLIT.split(text)
    for i in range(0, len(pieces), 2):
        sentence = pieces[i]
        sep = pieces[i + 1] if i + 1 < len(pieces) else ""
        if not sentence:
            out_parts.append(sep)
            continue
        new_sentence, drop = sentence, False
        for cm in reversed(list(_CLAIM.finditer(sentence))):
            if cm.group("ratio"):
                a, b = float(cm.group("a").replace(",", "")), float(cm.group("b").replace(",", ""))
                if b == 0:
                    continue
                claim, raw = Claim(cm.group(0), "ratio", (a, b), sentence.strip()), cm.group("a")  # type: ignore[arg-type]
            elif cm.group("pct"):
                raw = cm.group("p").replace(",", "")
                kind = "points" if re.search(r"point|pp\b", cm.group(0)) else "percent"
                claim = Claim(cm.group(0), kind, float(raw), sentence.strip())
            else:
                raw = cm.group("d")
                claim = Claim(cm.group(0), "decimal", float(raw), sentence.strip())
            result.claims.append(claim)
            if _matches(claim, raw, allowed):
                continue
            if not fix:
                claim.status = "unmatched"
                continue
            named = [n for n in by_name if n and n in sentence]
            if claim.kind in ("percent", "decimal") and len(named) == 1:
                value = by_name[named[0]]["accuracy"]
                claim.status, claim.replacement = "fixed", _format_like(claim, raw, value)
                new_sentence = new_sentence[: cm.start()] + claim.replacement + new_sentence[cm.end():]
            else:
                claim.status, drop = "removed", True
        if drop:
            for c in result.claims:
                if c.sentence == sentence.strip() and c.status == "fixed":
                    c.status = "removed"
            out_parts.append("\n" if sep == "\n" else "")
        else:
            out_parts.append(new_sentence + sep)
    result.text = re.sub(r"[ \t]{2,}", " ", "".join(out_parts)).strip()
    return result


# -- documents ----------------------------------------------------------------------------------


@dataclass
class Paper:
    title: str
    abstract: str
    markdown: str
    latex: str
    figure: Path | None
    records: list[dict[str, Any]]
    citations: list[str]
    claims: list[dict[str, Any]]


PROSE_SECTIONS = ("abstract", "introduction", "method", "discussion", "conclusion")


def verify_draft(draft: dict[str, Any], records: list[dict[str, Any]], comparison: dict[str, Any] | None,
                 extra_values: Iterable[float] = ()) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every prose section (and the title) through the claim checker; returns (clean draft, claims)."""
    clean, claims = dict(draft), []
    extra = list(extra_values)
    for key in ("title", *PROSE_SECTIONS):
        res = check_claims(str(draft.get(key) or ""), records, comparison, extra)
        clean[key] = res.text
        for c in res.as_dicts():
            claims.append({**c, "section": key})
    return clean, claims


def build_paper(state: dict[str, Any], draft: dict[str, Any], out_dir: Path) -> Paper:
    """Markdown + LaTeX (+ PNG figure) from a verified draft and the records in the state."""
    final = state.get("final") or {}
    cfg = state["config"]
    records = [r for r in (final.get("technique"), final.get("baseline")) if r]
    dev = [e["record"] for e in state.get("experiments") or [] if e.get("record")]
    fig = accuracy_figure(records, dev, out_dir / "figures" / "accuracy.png")
    lit = state.get("literature") or []
    best = state.get("best") or {}
    lines = [f"# {draft['title']}", ""]
    lines.append(f"*Lab:* {cfg.get('lab_name', 'agentlab')} · *Run:* `{state['run_id']}` · *Goal:* {state['goal']}")
    lines.append("")
    if state.get("stop_reason"):
        lines += [f"> **Incomplete run.** The lab wrapped up early: {state['stop_reason']}. "
                  "This report contains what was finished.", ""]
    lines += ["## Abstract", "", draft["abstract"], "", "## 1 Introduction", "", draft["introduction"], ""]
    lines += ["## 2 Related work", ""]
    if lit:
        for p in lit:
            lines.append(f"- [{p['id']}] *{p['title']}*: {p['summary']}")
    else:
        lines.append("No earlier papers on this goal were found on the preprint server.")
    lines += ["", "## 3 Method", "", draft["method"], ""]
    if best.get("spec"):
        lines += ["Technique specification (as run by the harness):", "", "```json",
                  json.dumps(best["spec"], indent=2, default=str)[:3000], "```", ""]
    lines += ["## 4 Results", "",
              f"Benchmark `{cfg['benchmark']}`; the technique was tuned on a dev split of {cfg['dev_n']} problems "
              f"and evaluated once, with the baseline, on a held-out report split. "
              "Every number in this table comes from an evaluation record of the harness.", ""]
    if records:
        lines += [results_table(records)]
        if final.get("comparison"):
            lines += [comparison_text(final["comparison"]), ""]
    else:
        lines += ["No evaluation finished on the report split.", ""]
    if fig:
        lines += ["![Accuracy](figures/accuracy.png)", ""]
    if dev:
        lines += ["### Dev-split experiments", "", results_table(dev)]
    lines += ["## 5 Discussion", "", draft["discussion"], "", "## 6 Conclusion", "", draft["conclusion"], ""]
    notes = state.get("notes") or []
    if notes:
        lines += ["## Notes on this run", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Provenance", "",
              "Records: " + (", ".join(f"`{r.get('record_id')}` (job `{r.get('job_id')}`)" for r in records + dev)
                             or "none"), ""]
    markdown = "\n".join(lines)
    latex = to_latex(draft, records, lit, state)
    citations = [str(p["id"]) for p in lit if p.get("id") is not None]
    return Paper(title=draft["title"], abstract=draft["abstract"], markdown=markdown, latex=latex, figure=fig,
                 records=records + dev, citations=citations, claims=[])


_TEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(s: Any) -> str:
    return "".join(_TEX_ESC.get(ch, ch) for ch in str(s))


def to_latex(draft: dict[str, Any], records: list[dict[str, Any]], lit: list[dict[str, Any]], state: dict) -> str:
    rows = "\n".join(
        f"{tex(r['technique'])} & {r['n']} & {r['correct']} & {tex(pct(r['accuracy']))} & "
        f"[{tex(pct(r.get('ci_low')))}, {tex(pct(r.get('ci_high')))}] \\\\" for r in records)
    bib = "\n".join(f"\\bibitem{{p{tex(p['id'])}}} {tex(p['title'])}. agentlab preprint {tex(p['id'])}."
                    for p in lit)
    parts = [
        r"\documentclass{article}", r"\usepackage[margin=1in]{geometry}", r"\usepackage{graphicx}",
        f"\\title{{{tex(draft['title'])}}}", f"\\author{{{tex(state['config'].get('lab_name', 'agentlab'))}}}",
        r"\begin{document}", r"\maketitle",
        r"\begin{abstract}", tex(draft["abstract"]), r"\end{abstract}",
    ]
    if state.get("stop_reason"):
        parts.append(f"\\textbf{{Incomplete run:}} {tex(state['stop_reason'])}.")
    for name in ("introduction", "method"):
        parts += [f"\\section{{{name.title()}}}", tex(draft[name])]
    parts += [r"\section{Results}", r"\begin{tabular}{lrrrl}", r"Technique & n & Correct & Accuracy & 95\% CI \\ \hline",
              rows, r"\end{tabular}"]
    if state.get("final", {}).get("comparison"):
        parts.append(tex(comparison_text(state["final"]["comparison"])))
    parts += [r"\section{Discussion}", tex(draft["discussion"]), r"\section{Conclusion}", tex(draft["conclusion"])]
    if bib:
        parts += [r"\begin{thebibliography}{9}", bib, r"\end{thebibliography}"]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"


def tex_engine() -> str | None:
    for name in ("tectonic", "pdflatex", "xelatex", "lualatex"):
        if shutil.which(name):
            return name
    return None


def write_outputs(paper: Paper, out_dir: Path) -> dict[str, str]:
    """paper.md, paper.tex, (paper.pdf where a TeX engine is installed), records.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "paper.md", "latex": out_dir / "paper.tex", "records": out_dir / "records.json"}
    files["markdown"].write_text(paper.markdown)
    files["latex"].write_text(paper.latex)
    files["records"].write_text(json.dumps({"records": paper.records, "claims": paper.claims,
                                            "citations": paper.citations}, indent=2, default=str))
    out = {k: str(v) for k, v in files.items()}
    if paper.figure:
        out["figure"] = str(paper.figure)
    engine = tex_engine()
    if engine:
        cmd = [engine, "paper.tex"] if engine == "tectonic" else [engine, "-interaction=nonstopmode", "paper.tex"]
        try:
            subprocess.run(cmd, cwd=out_dir, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if (out_dir / "paper.pdf").is_file():
            out["pdf"] = str(out_dir / "paper.pdf")
    return out
