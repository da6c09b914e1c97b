"""Paper assembly: the Markdown paper (sections, generated tables, figure, notes, provenance) and LaTeX from
a verified draft and the run's records, and the output files of a run."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.lab.report.figures import accuracy_figure, experiment_tree_figure
from agentlab.lab.report.latex import tex_engine, to_latex
from agentlab.lab.report.tables import comparison_text, results_table
from agentlab.lab.state import LabConfig
from agentlab.techniques import TechniqueSpec

log = logging.getLogger(__name__)


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
    comparison: dict[str, Any] | None = None  # the paired McNemar comparison of the technique and the baseline
    techniques: dict[str, Any] | None = None  # spec hash -> spec of every evaluated technique (published with it)
    relations: dict[str, str] | None = None  # cited paper id -> extends | compares (others: background)
    tree: Path | None = None  # the experiment tree figure


def citation_relations(state: dict[str, Any]) -> dict[str, str]:
    """How this run used earlier papers: "extends" for one whose published technique an experiment started
    from, "compares" for the prior best it was measured against."""
    out = {str(e["extends"]): "extends" for e in state.get("experiments") or [] if e.get("extends")}
    prior = (state.get("final") or {}).get("prior_best")
    if prior and str(prior["paper_id"]) not in out:
        out[str(prior["paper_id"])] = "compares"
    return out


def build_paper(state: dict[str, Any], draft: dict[str, Any], config: LabConfig, out_dir: Path) -> Paper:
    """Markdown + LaTeX (+ PNG figure) from a verified draft and the records in the state."""
    final = state.get("final") or {}
    records = [r for r in (final.get("technique"), final.get("baseline"), final.get("prior_best")) if r]
    dev = [e["record"] for e in state.get("experiments") or [] if e.get("record")]
    fig = accuracy_figure(records, dev, out_dir / "figures" / "accuracy.png")
    tree = experiment_tree_figure(state.get("experiments") or [], out_dir / "figures" / "experiments.png")
    lit = state.get("literature") or []
    markdown = "\n".join([*_front(state, draft, config, lit), *_results(state, config, records, dev, fig, tree),
                          *_back(state, draft, records + dev)])
    latex = to_latex(draft, records, lit, lab_name=config.lab_name, stop_reason=state.get("stop_reason"),
                     comparison=final.get("comparison"))
    relations = citation_relations(state)
    citations = list(dict.fromkeys([*(str(p["id"]) for p in lit if p.get("id") is not None), *relations]))
    specs = {**{TechniqueSpec.parse(e["spec"]).spec_hash(): e["spec"] for e in state.get("experiments") or []
                if e.get("record") and e.get("spec")}, **(final.get("specs") or {})}
    return Paper(title=draft["title"], abstract=draft["abstract"], markdown=markdown, latex=latex, figure=fig,
                 records=records + dev, citations=citations, claims=[], comparison=final.get("comparison"),
                 techniques=specs or None, relations=relations, tree=tree)


def _front(state: dict[str, Any], draft: dict[str, Any], config: LabConfig, lit: list[dict[str, Any]]) -> list[str]:
    """Title, run line, incomplete-run banner, abstract, introduction, related work, method."""
    lines = [f"# {draft['title']}", ""]
    lines.append(f"*Lab:* {config.lab_name} · *Run:* `{state['run_id']}` · *Goal:* {state['goal']}")
    lines.append("")
    if state.get("stop_reason"):
        lines += [(f"> **Incomplete run.** The lab wrapped up early: {state['stop_reason']}. "
                   "This report contains what was finished."), ""]
    lines += ["## Abstract", "", draft["abstract"], "", "## 1 Introduction", "", draft["introduction"], ""]
    lines += ["## 2 Related work", ""]
    if lit:
        used = citation_relations(state)
        for p in lit:
            how = {"extends": " We build on its published technique.",
                   "compares": " We re-ran its technique as the prior best."}.get(used.get(str(p["id"])), "")
            lines.append(f"- [{p['id']}] *{p['title']}*: {p['summary']}{how}")
    else:
        lines.append("No earlier papers on this goal were found on the preprint server.")
    lines += ["", "## 3 Method", "", draft["method"], ""]
    best = state.get("best") or {}
    if best.get("spec"):
        text = json.dumps(best["spec"], indent=2, default=str)
        if len(text) <= 3000:
            lines += ["Technique specification (as run by the harness):", "", "```json", text, "```", ""]
        else:  # long (code) specs are published whole as techniques of the paper, not pasted into its body
            lines += [f"The technique's full specification ({len(text)} characters) is published with this paper "
                      f"(`agentlab techniques pull PAPER_ID:{best['spec'].get('name')}`).", ""]
    return lines


def _results(state: dict[str, Any], config: LabConfig, records: list[dict[str, Any]], dev: list[dict[str, Any]],
             fig: Path | None, tree: Path | None = None) -> list[str]:
    """The results section: generated tables, the McNemar line, the figure, the dev experiments."""
    final = state.get("final") or {}
    lines = ["## 4 Results", "",
             (f"Benchmark `{config.benchmark}`; the technique was tuned on a dev split of {config.dev_n} problems "
              "and evaluated once, with the baseline, on a held-out report split. "
              "Every number in this table comes from an evaluation record of the harness."), ""]
    if records:
        lines += [results_table(records)]
        if final.get("comparison"):
            lines += [comparison_text(final["comparison"]), ""]
        prior = final.get("prior_best")
        if prior:
            lines += [(f"Prior best: `{prior['technique']}` is the best published technique for this benchmark and "
                       f"model (paper [{prior['paper_id']}], lab {prior['lab']}), re-run here on the same report "
                       "split." + (" " + comparison_text(final["comparison_prior"]) if final.get("comparison_prior")
                                   else "")), ""]
    else:
        lines += ["No evaluation finished on the report split.", ""]
    if fig:
        lines += ["![Accuracy](figures/accuracy.png)", ""]
    if dev:
        lines += ["### Dev-split experiments", "", results_table(dev)]
    if tree:
        lines += ["", "![Experiment tree](figures/experiments.png)", ""]
    return lines


def _back(state: dict[str, Any], draft: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Discussion, conclusion, the run's notes and the records' provenance."""
    lines = ["## 5 Discussion", "", draft["discussion"], "", "## 6 Conclusion", "", draft["conclusion"], ""]
    notes = state.get("notes") or []
    if notes:
        lines += ["## Notes on this run", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Provenance", "",
              "Records: " + (", ".join(f"`{r.get('record_id')}` (job `{r.get('job_id')}`)" for r in records)
                             or "none"), ""]
    return lines


def write_outputs(paper: Paper, out_dir: Path) -> dict[str, str]:
    """paper.md, paper.tex, (paper.pdf where a TeX engine is installed), records.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "paper.md", "latex": out_dir / "paper.tex", "records": out_dir / "records.json"}
    if paper.techniques:  # the exact specs behind the records: what another lab pulls or replicates
        files["techniques"] = out_dir / "techniques.json"
        files["techniques"].write_text(json.dumps(paper.techniques, indent=2, sort_keys=True))
    files["markdown"].write_text(paper.markdown)
    files["latex"].write_text(paper.latex)
    files["records"].write_text(json.dumps({"records": paper.records, "comparison": paper.comparison,
                                            "claims": paper.claims, "citations": paper.citations},
                                           indent=2, default=str))
    out = {k: str(v) for k, v in files.items()}
    if paper.figure:
        out["figure"] = str(paper.figure)
    if paper.tree:
        out["tree"] = str(paper.tree)
    engine = tex_engine()
    if engine:
        cmd = [engine, "paper.tex"] if engine == "tectonic" else [engine, "-interaction=nonstopmode", "paper.tex"]
        try:
            subprocess.run(cmd, cwd=out_dir, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s could not build paper.pdf in %s: %s", engine, out_dir, exc)
        if (out_dir / "paper.pdf").is_file():
            out["pdf"] = str(out_dir / "paper.pdf")
    return out
