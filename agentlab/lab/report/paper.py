"""Paper assembly: the Markdown paper (sections, generated tables, figure, notes, provenance) and LaTeX from
a verified draft and the run's records, and the output files of a run."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.lab.power import ReportSizing, demo_text, sizing_text
from agentlab.lab.report.figures import accuracy_figure, experiment_tree_figure
from agentlab.lab.report.latex import tex_engine, to_latex
from agentlab.lab.report.tables import (
    ablation_table,
    comparison_text,
    confirmation_text,
    paired_table,
    results_table,
)
from agentlab.lab.search import summary_text
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
    curves: list[Path] | None = None  # training curves of the run's training techniques


def citation_relations(state: dict[str, Any]) -> dict[str, str]:
    """How this run used earlier papers: "extends" for one whose published technique an experiment started
    from, "compares" for the prior best it was measured against."""
    out = {str(e["extends"]): "extends" for e in state.get("experiments") or [] if e.get("extends")}
    prior = (state.get("final") or {}).get("prior_best")
    if prior and str(prior["paper_id"]) not in out:
        out[str(prior["paper_id"])] = "compares"
    return out


def used_papers(lit: list[dict[str, Any]], relations: dict[str, str]) -> list[dict[str, Any]]:
    """The papers this run used: read and judged relevant to the goal, or built on or compared with. Only they
    are cited; the rest of what the search returned is named as not used."""
    return [p for p in lit if p.get("id") is not None and (p.get("relevant", True) or str(p["id"]) in relations)]


def dev_records(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The dev split's records: the baseline's (run first, every experiment is paired with it), then each
    experiment's."""
    base = (state.get("dev_baseline") or {}).get("record")
    return ([base] if base else []) + [e["record"] for e in state.get("experiments") or [] if e.get("record")]


def confirmation_records(final: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the confirmation on fresh dev problems and of the ablation (``agentlab.lab.confirm``): they
    join the paper's records."""
    conf = final.get("confirmation") or {}
    recs = [conf.get("technique"), conf.get("baseline"), *(r.get("record") for r in conf.get("ablation") or [])]
    return list({r["record_id"]: r for r in recs if r}.values())


def build_paper(state: dict[str, Any], draft: dict[str, Any], config: LabConfig, out_dir: Path) -> Paper:
    """Markdown + LaTeX (+ PNG figure) from a verified draft and the records in the state."""
    final = state.get("final") or {}
    records = [r for r in (final.get("technique"), final.get("baseline"), final.get("prior_best")) if r]
    dev = dev_records(state)
    confirmed = confirmation_records(final)  # fresh dev problems: shown in their own section
    experiment_records = [e["record"] for e in state.get("experiments") or [] if e.get("record")]
    fig = accuracy_figure(records, experiment_records, out_dir / "figures" / "accuracy.png")
    tree = experiment_tree_figure(state.get("experiments") or [], out_dir / "figures" / "experiments.png",
                                  config.prune_after)
    lit = state.get("literature") or []
    relations = citation_relations(state)
    used = used_papers(lit, relations)
    curves = _training_curves(state.get("experiments") or [], out_dir / "figures")
    markdown = "\n".join([*_front(state, draft, config, lit, used, relations),
                          *_training(state.get("experiments") or []),
                          *_results(state, config, records, dev, fig, tree),
                          *_back(state, draft, records + dev + confirmed)])
    latex = to_latex(draft, records, used, lab_name=config.lab_name, stop_reason=state.get("stop_reason"),
                     comparison=final.get("comparison"), sizing=" ".join(_sizing_lines(state, config)),
                     confirmation=final.get("confirmation"))
    citations = list(dict.fromkeys([*(str(p["id"]) for p in used), *relations]))
    ran = [*(state.get("experiments") or []), state.get("dev_baseline") or {}]
    specs = {**{TechniqueSpec.parse(e["spec"]).spec_hash(): e["spec"] for e in ran
                if e.get("record") and e.get("spec")}, **(final.get("specs") or {})}
    return Paper(title=draft["title"], abstract=draft["abstract"], markdown=markdown, latex=latex, figure=fig,
                 records=records + dev + confirmed, citations=citations, claims=[], comparison=final.get("comparison"),
                 techniques=specs or None, relations=relations, tree=tree, curves=curves or None)


def _front(state: dict[str, Any], draft: dict[str, Any], config: LabConfig, lit: list[dict[str, Any]],
           used: list[dict[str, Any]], relations: dict[str, str]) -> list[str]:
    """Title, run line, incomplete-run banner, abstract, introduction, related work, method."""
    lines = [f"# {draft['title']}", ""]
    lines.append(f"*Lab:* {config.lab_name} · *Run:* `{state['run_id']}` · *Goal:* {state['goal']}")
    lines.append("")
    if state.get("stop_reason"):
        lines += [(f"> **Incomplete run.** The lab wrapped up early: {state['stop_reason']}. "
                   "This report contains what was finished."), ""]
    if config.demo:
        lines += [f"> **Demo-size run.** {_demo_text(state, config)}", ""]
    lines += ["## Abstract", "", draft["abstract"], "", "## 1 Introduction", "", draft["introduction"], ""]
    lines += ["## 2 Related work", ""]
    if used:
        for p in used:
            how = {"extends": " We build on its published technique.",
                   "compares": " We re-ran its technique as the prior best."}.get(relations.get(str(p["id"])), "")
            lines.append(f"- [{p['id']}] *{p['title']}*: {p['summary']}{how}")
    unused = [p for p in lit if p not in used]
    if unused:
        lines.append(("" if used else "No earlier paper the search returned bore on this goal. ")
                     + "Also returned by the search and not used (not cited): "
                     + ", ".join(f"*{p.get('title', '?')}*" for p in unused) + ".")
    elif not used:
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


def _demo_text(state: dict[str, Any], config: LabConfig) -> str:
    """What a demo-size run's paper says about its size."""
    report_n = ((state.get("final") or {}).get("sizing") or {}).get("report_n", config.report_n)
    return demo_text(report_n, config.min_gain)


def _sizing_lines(state: dict[str, Any], config: LabConfig) -> list[str]:
    """A demo's banner and the report split's sizing, for the LaTeX paper."""
    sizing = (state.get("final") or {}).get("sizing")
    return ([f"Demo-size run. {_demo_text(state, config)}"] if config.demo else []) + \
        ([sizing_text(ReportSizing.model_validate(sizing))] if sizing else [])


def _training_curves(experiments: list[dict[str, Any]], folder: Path) -> list[Path]:
    """The training runs' loss/reward curves, copied next to the paper as ``figures/train-eN.png``."""
    import shutil

    out = []
    for e in experiments:
        curve = (e.get("training") or {}).get("curve")
        if curve and Path(curve).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            out.append(Path(shutil.copyfile(curve, folder / f"train-e{e['iteration']}.png")))
    return out


def _training(experiments: list[dict[str, Any]]) -> list[str]:
    """The training setup of every training technique: recipe, data and its disjointness, outcome, curve."""
    lines = []
    for e in experiments:
        t = e.get("training")
        if not t:
            continue
        d, h = t["data"], t["hyper"]
        source = (f"reasoning-gym `{d['task']}` generated at seed {d['seed']}" if d["source"] == "reasoning_gym"
                  else f"the training pool of `{d['benchmark']}`")
        outcome = (f"checkpoint `sha256:{t['checkpoint_hash'][:16]}` after {t['steps']} of {t['max_steps']} steps"
                   if t.get("checkpoint_hash") else f"no checkpoint (training run {t['status']})")
        last = ", ".join(f"{k} {v:.4g}" for k, v in t.get("last", {}).items() if k in ("loss", "reward"))
        lines += [f"**Training (experiment {e['iteration']}).** {t['method'].upper()} of the model under study with "
                  f"{t['finetune']} (rank {t['lora_r']}), learning rate {h['learning_rate']:g}, batch "
                  f"{h['batch_size']}, on {t['n_train']} problems from {source}, prompted as `{d['technique']}`"
                  + (f" with `{d['target']}` targets" if t["method"] == "sft" else ", rewarded by the grader")
                  + ". None of them is in the report split or among the dev problems"
                  + (f" ({t['dropped_leaks']} generated duplicates of report problems were dropped)"
                     if t.get("dropped_leaks") else "")
                  + f". Outcome: {outcome}" + (f"; last {last}" if last else "")
                  + f" (training run `{t['run_id']}`). The trained model is evaluated as its own model: its records "
                  "name the checkpoint, never the base model.", ""]
        if t.get("curve"):
            lines += [f"![Training curve, experiment {e['iteration']}](figures/train-e{e['iteration']}.png)", ""]
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
        if final.get("sizing"):
            lines += [sizing_text(ReportSizing.model_validate(final["sizing"])), ""]
        prior = final.get("prior_best")
        if prior:
            lines += [(f"Prior best: `{prior['technique']}` is the best published technique for this benchmark, "
                       f"problem population and model (paper [{prior['paper_id']}], lab {prior['lab']})"
                       + _prior_basis(prior) + ", re-run here on the same report split."
                       + (" " + comparison_text(final["comparison_prior"]) if final.get("comparison_prior") else "")),
                      ""]
    else:
        lines += ["No evaluation finished on the report split.", ""]
    if fig:
        lines += ["![Accuracy](figures/accuracy.png)", ""]
    if dev:
        lines += ["### Dev-split experiments", "", results_table(dev)]
        paired = paired_table(state.get("experiments") or [])
        lines += [paired] if paired else []
    if final.get("confirmation"):
        lines += ["### Confirmation and ablation", "", confirmation_text(final["confirmation"]), "",
                  results_table(confirmation_records(final)), ablation_table(final["confirmation"])]
    if state.get("search"):
        lines += ["", summary_text(state["search"])]
    if tree:
        lines += ["", "![Experiment tree](figures/experiments.png)", ""]
    return lines


def _prior_basis(prior: dict[str, Any]) -> str:
    """Why that result is the bar: the lower bound of its published 95% CI, on how many problems, replicated or not."""
    if prior.get("published_n") is None:  # a record from before the prior best was chosen this way
        return ""
    replicated = f", replicated by {prior['replications']} other lab(s)" if prior.get("replications") else ""
    return (f", by the lower bound of its published 95% CI ({100 * prior['published_ci_low']:.1f}% on "
            f"{prior['published_n']} report-split problems{replicated})")


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
    for curve in paper.curves or []:
        out[f"curve-{curve.stem}"] = str(curve)
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
