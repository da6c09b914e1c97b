"""Paper assembly: the Markdown paper (sections, generated tables, figure, notes, provenance) and LaTeX from
a verified draft and the run's records, and the output files of a run."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.lab.models import Experiment, Final, PriorBest, Record, dumped
from agentlab.lab.power import demo_text, sizing_text
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
from agentlab.lab.view import LabView, LiteraturePaper

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


def citation_relations(view: LabView) -> dict[str, str]:
    """How this run used earlier papers: "extends" for one whose published technique an experiment started
    from, "compares" for the prior best it was measured against."""
    out = {str(e.extends): "extends" for e in view.experiments if e.extends}
    prior = view.final.prior_best
    if prior and str(prior.paper_id) not in out:
        out[str(prior.paper_id)] = "compares"
    return out


def used_papers(lit: list[LiteraturePaper], relations: dict[str, str]) -> list[LiteraturePaper]:
    """The papers this run used: read and judged relevant to the goal, or built on or compared with. Only they
    are cited; the rest of what the search returned is named as not used."""
    return [p for p in lit if p.id is not None and (p.relevant or str(p.id) in relations)]


def dev_records(view: LabView) -> list[Record]:
    """The dev split's records: the baseline's (run first, every experiment is paired with it), then each
    experiment's."""
    base = view.dev_baseline.record
    return ([base] if base else []) + [e.record for e in view.experiments if e.record]


def confirmation_records(final: Final) -> list[Record]:
    """The records of the confirmation on fresh dev problems and of the ablation (``agentlab.lab.confirm``): they
    join the paper's records."""
    conf = final.confirmation
    if conf is None:
        return []
    recs = [conf.technique, conf.baseline, *(r.record for r in conf.ablation)]
    return list({r.record_id: r for r in recs if r}.values())


def ran_specs(view: LabView) -> dict[str, Any]:
    """spec_hash -> spec of every technique that ran (techniques.json; what the claim checker reads the method's
    descriptions against)."""
    ran = [*view.experiments, view.dev_baseline]
    return {**{e.spec.parsed().spec_hash(): e.spec.dump() for e in ran if e.record and e.spec}, **view.final.specs}


def build_paper(state: dict[str, Any] | LabView, draft: dict[str, Any], config: LabConfig, out_dir: Path) -> Paper:
    """Markdown + LaTeX (+ PNG figure) from a verified draft and the records in the state (or its view)."""
    view = LabView.of(state)
    final = view.final
    records = final.report_records()
    dev = dev_records(view)
    confirmed = confirmation_records(final)  # fresh dev problems: shown in their own section
    fig = accuracy_figure(records, [e.record for e in view.experiments if e.record],
                          out_dir / "figures" / "accuracy.png")
    tree = experiment_tree_figure(view.experiments, out_dir / "figures" / "experiments.png", config.prune_after)
    relations = citation_relations(view)
    used = used_papers(view.literature, relations)
    curves = _training_curves(view.experiments, out_dir / "figures")
    markdown = "\n".join([*_front(view, draft, config, used, relations), *_training(view.experiments),
                          *_results(view, config, records, dev, fig, tree),
                          *_back(view, draft, records + dev + confirmed)])
    latex = to_latex(draft, records, used, lab_name=config.lab_name, stop_reason=view.stop_reason,
                     comparison=final.comparison, sizing=" ".join(_sizing_lines(view, config)),
                     confirmation=final.confirmation)
    citations = list(dict.fromkeys([*(str(p.id) for p in used), *relations]))
    specs = ran_specs(view)
    return Paper(title=draft["title"], abstract=draft["abstract"], markdown=markdown, latex=latex, figure=fig,
                 records=[r.dump() for r in records + dev + confirmed], citations=citations, claims=[],
                 comparison=dumped(final.comparison), techniques=specs or None, relations=relations, tree=tree,
                 curves=curves or None)


def _front(view: LabView, draft: dict[str, Any], config: LabConfig, used: list[LiteraturePaper],
           relations: dict[str, str]) -> list[str]:
    """Title, run line, incomplete-run banner, abstract, introduction, related work, method."""
    lines = [f"# {draft['title']}", ""]
    lines.append(f"*Lab:* {config.lab_name} · *Run:* `{view.run_id}` · *Goal:* {view.goal}")
    lines.append("")
    if view.stop_reason:
        lines += [(f"> **Incomplete run.** The lab wrapped up early: {view.stop_reason}. "
                   "This report contains what was finished."), ""]
    if config.demo:
        lines += [f"> **Demo-size run.** {_demo_text(view, config)}", ""]
    lines += ["## Abstract", "", draft["abstract"], "", "## 1 Introduction", "", draft["introduction"], ""]
    lines += ["## 2 Related work", ""]
    how = {"extends": " We build on its published technique.", "compares": " We re-ran its technique as the prior best."}
    lines += [f"- [{p.id}] *{p.title}*: {p.summary}{how.get(relations.get(str(p.id)), '')}" for p in used]
    unused = [p for p in view.literature if p not in used]
    if unused:
        lines.append(("" if used else "No earlier paper the search returned bore on this goal. ")
                     + "Also returned by the search and not used (not cited): "
                     + ", ".join(f"*{p.title or '?'}*" for p in unused) + ".")
    elif not used:
        lines.append("No earlier papers on this goal were found on the preprint server.")
    return [*lines, "", "## 3 Method", "", draft["method"], "", *_method_spec(view.best)]


def _method_spec(best: Experiment | None) -> list[str]:
    """The best technique's spec as run, or where to pull it when it is long (a code technique)."""
    if not (best and best.spec):
        return []
    text = json.dumps(best.spec.dump(), indent=2, default=str)
    if len(text) <= 3000:
        return ["Technique specification (as run by the harness):", "", "```json", text, "```", ""]
    # long (code) specs are published whole as techniques of the paper, not pasted into its body
    return [(f"The technique's full specification ({len(text)} characters) is published with this paper "
             f"(`agentlab techniques pull PAPER_ID:{best.spec.name}`)."), ""]


def _demo_text(view: LabView, config: LabConfig) -> str:
    """What a demo-size run's paper says about its size."""
    sizing = view.final.sizing
    return demo_text(sizing.report_n if sizing else config.report_n, config.min_gain)


def _sizing_lines(view: LabView, config: LabConfig) -> list[str]:
    """A demo's banner and the report split's sizing, for the LaTeX paper."""
    sizing = view.final.sizing
    return ([f"Demo-size run. {_demo_text(view, config)}"] if config.demo else []) + \
        ([sizing_text(sizing)] if sizing else [])


def _training_curves(experiments: list[Experiment], folder: Path) -> list[Path]:
    """The training runs' loss/reward curves, copied next to the paper as ``figures/train-eN.png``."""
    import shutil

    out = []
    for e in experiments:
        curve = e.training.curve if e.training else None
        if curve and Path(curve).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            out.append(Path(shutil.copyfile(curve, folder / f"train-e{e.iteration}.png")))
    return out


def _training(experiments: list[Experiment]) -> list[str]:
    """The training setup of every training technique: recipe, data and its disjointness, outcome, curve."""
    lines = []
    for e in experiments:
        t = e.training
        if not t:
            continue
        d, h = t.data, t.hyper
        source = (f"reasoning-gym `{d.task}` generated at seed {d.seed}" if d.source == "reasoning_gym"
                  else f"the training pool of `{d.benchmark}`")
        outcome = (f"checkpoint `sha256:{t.checkpoint_hash[:16]}` after {t.steps} of {t.max_steps} steps"
                   if t.checkpoint_hash else f"no checkpoint (training run {t.status})")
        last = ", ".join(f"{k} {v:.4g}" for k, v in t.last.items() if k in ("loss", "reward"))
        lines += [f"**Training (experiment {e.iteration}).** {t.method.upper()} of the model under study with "
                  f"{t.finetune} (rank {t.lora_r}), learning rate {h.learning_rate:g}, batch "
                  f"{h.batch_size}, on {t.n_train} problems from {source}, prompted as `{d.technique}`"
                  + (f" with `{d.target}` targets" if t.method == "sft" else ", rewarded by the grader")
                  + ". None of them is in the report split or among the dev problems"
                  + (f" ({t.dropped_leaks} generated duplicates of report problems were dropped)"
                     if t.dropped_leaks else "")
                  + f". Outcome: {outcome}" + (f"; last {last}" if last else "")
                  + f" (training run `{t.run_id}`). The trained model is evaluated as its own model: its records "
                  "name the checkpoint, never the base model.", ""]
        if t.curve:
            lines += [f"![Training curve, experiment {e.iteration}](figures/train-e{e.iteration}.png)", ""]
    return lines


def _results(view: LabView, config: LabConfig, records: list[Record], dev: list[Record], fig: Path | None,
             tree: Path | None = None) -> list[str]:
    """The results section: generated tables, the McNemar line, the figure, the dev experiments."""
    final = view.final
    lines = ["## 4 Results", "",
             (f"Benchmark `{config.benchmark}`; the technique was tuned on a dev split of {config.dev_n} problems "
              "and evaluated once, with the baseline, on a held-out report split. "
              "Every number in this table comes from an evaluation record of the harness."), ""]
    lines += _report_split(final, records) if records else ["No evaluation finished on the report split.", ""]
    if fig:
        lines += ["![Accuracy](figures/accuracy.png)", ""]
    if dev:
        lines += ["### Dev-split experiments", "", results_table(dev)]
        paired = paired_table(view.experiments)
        lines += [paired] if paired else []
    if final.confirmation:
        lines += ["### Confirmation and ablation", "", confirmation_text(final.confirmation), "",
                  results_table(confirmation_records(final)), ablation_table(final.confirmation)]
    if view.search:
        lines += ["", summary_text(view.search)]
    if tree:
        lines += ["", "![Experiment tree](figures/experiments.png)", ""]
    return lines


def _report_split(final: Final, records: list[Record]) -> list[str]:
    """The report split's table, its paired comparison, its sizing and the prior best it was measured against."""
    lines = [results_table(records)]
    if final.comparison:
        lines += [comparison_text(final.comparison), ""]
    if final.sizing:
        lines += [sizing_text(final.sizing), ""]
    prior = final.prior_best
    if prior:
        lines += [(f"Prior best: `{prior.technique}` is the best published technique for this benchmark, "
                   f"problem population and model (paper [{prior.paper_id}], lab {prior.lab})"
                   + _prior_basis(prior) + ", re-run here on the same report split."
                   + (" " + comparison_text(final.comparison_prior) if final.comparison_prior else "")), ""]
    return lines


def _prior_basis(prior: PriorBest) -> str:
    """Why that result is the bar: the lower bound of its published 95% CI, on how many problems, replicated or not."""
    if prior.published_n is None:  # a record from before the prior best was chosen this way
        return ""
    replicated = f", replicated by {prior.replications} other lab(s)" if prior.replications else ""
    return (f", by the lower bound of its published 95% CI ({100 * prior.published_ci_low:.1f}% on "
            f"{prior.published_n} report-split problems{replicated})")


def _back(view: LabView, draft: dict[str, Any], records: list[Record]) -> list[str]:
    """Discussion, conclusion, the run's notes and the records' provenance."""
    lines = ["## 5 Discussion", "", draft["discussion"], "", "## 6 Conclusion", "", draft["conclusion"], ""]
    if view.notes:
        lines += ["## Notes on this run", ""] + [f"- {n}" for n in view.notes] + [""]
    lines += ["## Provenance", "",
              "Records: " + (", ".join(f"`{r.record_id}` (job `{r.job_id}`)" for r in records) or "none"), ""]
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
