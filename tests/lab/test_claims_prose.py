"""Claims without numbers: direction, strength and certainty words, counts of the paired comparison and method
descriptions must match the records (and the specs behind them) of the techniques a sentence names.

``FIXTURES``, ``WRONG`` and ``RIGHT`` (by kind) are also read by ``benchmarks/bench_claims.py``. Each fixture is
a technique against the baseline zero_shot_cot on a report split (and a dev split), with its spec on its records:
  W  verify_cot (verifier)              48/100 vs 42/100, 8 wins 2 losses, p = 0.109  (a weak, not significant win)
  S  vote5_fewshot (5 chains, majority,
     3 few-shot examples, 1 refine round) 75/100 vs 45/100, 35 wins 5 losses, p < 0.001 (large, significant)
  L  refine_cot (2 refine rounds, a
     planning step)                     38/100 vs 46/100, 2 wins 10 losses, p = 0.039  (a significant loss)
  N  plan_solve (a planning step)        1/5 vs 1/5, no discordant problem, p = 1
  T  sft_cot (a fine-tuned checkpoint)   52/100 vs 44/100, 12 wins 4 losses, p = 0.077

``WRONG_HELD_OUT``/``RIGHT_HELD_OUT`` were written in four batches before the checker was tuned on them (their
misses were then fixed), ``NEUTRAL`` is prose a paper writes that claims nothing the records contradict.
"""

from __future__ import annotations

import pytest

from agentlab.eval.stats import mcnemar
from agentlab.lab.report.claims import check_claims, check_paper, verify_draft

PLAIN = {"kind": "prompt", "chains": {"n": 1, "aggregation": "first"}, "few_shot": [], "steps": [],
         "refine": None}
SHOT = {"question": "What is 2 + 3?", "solution": "2 + 3 = 5. \\boxed{5}"}
SPECS = {
    "zero_shot_cot": {**PLAIN, "name": "zero_shot_cot"},
    "verify_cot": {**PLAIN, "name": "verify_cot", "verifier": {"on_reject": "keep"}},
    "vote5_fewshot": {**PLAIN, "name": "vote5_fewshot", "chains": {"n": 5, "aggregation": "majority"},
                      "few_shot": [SHOT] * 3, "refine": {"rounds": 1}},
    "refine_cot": {**PLAIN, "name": "refine_cot", "refine": {"rounds": 2},
                   "steps": [{"name": "plan", "template": "Plan: {question}"}]},
    "plan_solve": {**PLAIN, "name": "plan_solve", "steps": [{"name": "plan", "template": "Plan: {question}"}]},
    "sft_cot": {**PLAIN, "name": "sft_cot"},
}


def _rec(tech: str, split: str, correct: int, n: int, rid: str, **extra) -> dict:
    return {"record_id": rid, "technique": tech, "split": split, "n": n, "correct": correct,
            "accuracy": correct / n, "spec": SPECS[tech], "model_id": "sha256:base", **extra}


def _fixture(tech: str, report: tuple[int, int], wins: int, losses: int, n: int = 100,
             dev: tuple[int, int] = (30, 26), **extra) -> tuple[list[dict], dict]:
    records = [_rec(tech, "report", report[0], n, f"{tech}-r", **extra),
               _rec("zero_shot_cot", "report", report[1], n, f"{tech}-b"),
               _rec(tech, "dev", dev[0], 50, f"{tech}-d", **extra),
               _rec("zero_shot_cot", "dev", dev[1], 50, f"{tech}-db")]
    comparison = {"n": n, "wins": wins, "losses": losses, "delta": (report[0] - report[1]) / n,
                  "p_value": mcnemar(wins, losses), "record_a": f"{tech}-r", "record_b": f"{tech}-b"}
    return records, comparison


FIXTURES = {
    "W": _fixture("verify_cot", (48, 42), 8, 2),
    "S": _fixture("vote5_fewshot", (75, 45), 35, 5, dev=(40, 24)),
    "L": _fixture("refine_cot", (38, 46), 2, 10),
    "N": _fixture("plan_solve", (1, 1), 0, 0, n=5),
    "T": _fixture("sft_cot", (52, 44), 12, 4, model_id="checkpoint:0123456789abcdef"),
}
KINDS = ("direction", "strength", "count", "method")

WRONG = {  # kind -> [(fixture, sentence)]: each must be rejected by a claim of its kind
    "direction": [
        ("W", "verify_cot resulted in a slight decrease in accuracy compared to the baseline method."),
        ("W", "The technique resulted in a slight decrease in accuracy compared to the baseline."),
        ("W", "Our method performed worse than zero_shot_cot on the held-out split."),
        ("W", "zero_shot_cot outperformed verify_cot on the report split."),
        ("W", "The baseline outperformed the proposed technique."),
        ("W", "Accuracy dropped with verify_cot relative to zero_shot_cot."),
        ("W", "verify_cot underperformed the baseline by six points."),
        ("W", "verify_cot was less accurate than zero_shot_cot."),
        ("W", "Compared with zero_shot_cot, verify_cot lowered accuracy."),
        ("W", "It trails the baseline on the held-out problems."),
        ("W", "verify_cot hurt accuracy relative to zero_shot_cot."),
        ("W", "Adding a verifier degraded performance compared to the baseline."),
        ("W", "zero_shot_cot achieved higher accuracy than verify_cot."),
        ("W", "On the dev split, zero_shot_cot was ahead of verify_cot."),
        ("W", "The proposed technique fell short of the baseline."),
        ("L", "refine_cot improved accuracy over zero_shot_cot."),
        ("L", "refine_cot gained accuracy over the baseline."),
        ("L", "The technique beats the baseline on the report split."),
        ("L", "zero_shot_cot was outperformed by refine_cot."),
        ("L", "The baseline fell behind refine_cot."),
        ("L", "refine_cot is superior to zero_shot_cot."),
        ("L", "Our approach raised accuracy relative to the baseline."),
        ("L", "refine_cot and zero_shot_cot reached comparable accuracy."),
        ("S", "vote5_fewshot was worse than the baseline."),
        ("S", "The baseline achieved better accuracy than vote5_fewshot."),
        ("S", "vote5_fewshot performed on par with zero_shot_cot."),
        ("S", "There was no difference between vote5_fewshot and zero_shot_cot."),
        ("N", "plan_solve improved accuracy over zero_shot_cot."),
        ("N", "zero_shot_cot scored higher than plan_solve."),
        ("T", "sft_cot lowered accuracy relative to zero_shot_cot."),
        ("T", "Our prompting strategy made more errors than the baseline."),
    ],
    "strength": [
        ("N", "The technique has been proven to reduce variability in accuracy across multiple tests."),
        ("W", "The baseline technique has been shown to improve the accuracy of embedded models."),
        ("W", "verify_cot significantly outperforms zero_shot_cot."),
        ("W", "Our results demonstrate that verify_cot is better than the baseline."),
        ("W", "verify_cot clearly outperformed zero_shot_cot on the held-out split."),
        ("W", "The verifier substantially improves accuracy over the baseline."),
        ("W", "verify_cot is a robust improvement over zero_shot_cot."),
        ("W", "verify_cot consistently beats the baseline."),
        ("W", "verify_cot achieves state-of-the-art accuracy on this benchmark."),
        ("W", "The improvement of verify_cot over zero_shot_cot is statistically significant."),
        ("W", "verify_cot beat the baseline on every problem."),
        ("W", "These results confirm that verify_cot outperforms zero_shot_cot."),
        ("W", "verify_cot dramatically improves accuracy compared with zero_shot_cot."),
        ("S", "vote5_fewshot only slightly improves on zero_shot_cot."),
        ("S", "The gain of vote5_fewshot over the baseline is marginal."),
        ("S", "vote5_fewshot did not significantly outperform zero_shot_cot."),
        ("S", "The difference between vote5_fewshot and zero_shot_cot is not significant."),
        ("S", "vote5_fewshot always beat zero_shot_cot."),
        ("S", "vote5_fewshot reduces the variance of the model's answers."),
        ("L", "refine_cot substantially reduces accuracy relative to zero_shot_cot."),
        ("L", "refine_cot significantly outperforms the baseline."),
        ("L", "Self-refinement is proven to help: refine_cot beats the baseline."),
        ("L", "The drop from refine_cot is not statistically significant."),
        ("N", "plan_solve is clearly more accurate than zero_shot_cot."),
        ("N", "plan_solve delivers a dramatic gain over the baseline."),
        ("N", "plan_solve yields more stable results than the baseline."),
        ("T", "sft_cot significantly improved over zero_shot_cot (p = 0.08)."),
        ("T", "Fine-tuning sft_cot led to a large improvement over the baseline."),
        ("T", "The improvement is statistically significant."),
    ],
    "count": [
        ("W", "verify_cot won on 10 problems and lost on 2."),
        ("W", "verify_cot had 8 wins and 4 losses against the baseline."),
        ("W", "The technique was right on 2 problems where the baseline was wrong."),
        ("W", "Of the 10 problems where they disagreed, verify_cot won 2."),
        ("W", "verify_cot beat zero_shot_cot on 8 of the 12 problems where they disagreed."),
        ("W", "The two techniques disagreed on 14 problems."),
        ("W", "We evaluated both techniques on the same 200 held-out problems."),
        ("W", "The techniques tied on 50 problems."),
        ("W", "verify_cot lost on 8 problems."),
        ("W", "The baseline was ahead on 8 problems."),
        ("S", "vote5_fewshot won 30 problems and lost 5."),
        ("S", "vote5_fewshot solved 35 problems that the baseline missed and missed 10 that it solved."),
        ("S", "The baseline won on 35 problems."),
        ("S", "vote5_fewshot solved 80 problems on the report split."),
        ("S", "There were 45 discordant pairs."),
        ("S", "vote5_fewshot and zero_shot_cot were compared on 120 problems."),
        ("L", "refine_cot won 10 problems and lost 2."),
        ("L", "The baseline had 2 wins and 10 losses against refine_cot."),
        ("L", "refine_cot was better on 10 of the 12 problems where the two disagreed."),
        ("L", "refine_cot fixed 10 problems that zero_shot_cot got wrong."),
        ("N", "plan_solve won on 1 problem and lost on 1."),
        ("N", "On all 10 test problems, plan_solve matched the baseline."),
        ("T", "sft_cot had 12 wins, 4 losses and 80 ties."),
        ("T", "sft_cot won 14 of the 16 discordant problems."),
        ("T", "sft_cot was evaluated on 150 report-split problems."),
        ("T", "On the report split, sft_cot lost only 2 problems to the baseline."),
        ("T", "sft_cot answered eight problems that the baseline got wrong."),
    ],
    "method": [
        ("W", "The method uses advanced algorithms such as automatic regression."),
        ("W", "verify_cot samples several reasoning chains and takes a majority vote."),
        ("W", "verify_cot is an ensemble of prompts."),
        ("W", "Our technique relies on self-consistency over five samples."),
        ("W", "zero_shot_cot uses a verifier to check its answer."),
        ("W", "verify_cot iteratively refines its answer through self-critique."),
        ("W", "verify_cot adds three few-shot examples to the prompt."),
        ("W", "The technique was fine-tuned with reinforcement learning."),
        ("W", "verify_cot executes Python code to check each step."),
        ("W", "verify_cot combines a verifier with self-consistency."),
        ("W", "We applied logistic regression to choose among chains."),
        ("W", "verify_cot ran 4 chains per problem."),
        ("S", "vote5_fewshot samples 3 chains per problem."),
        ("S", "vote5_fewshot uses no few-shot examples."),
        ("S", "vote5_fewshot adds a verification step before voting."),
        ("S", "vote5_fewshot is a zero-shot technique."),
        ("S", "vote5_fewshot includes five worked examples in its prompt."),
        ("L", "refine_cot aggregates multiple chains by majority voting."),
        ("L", "refine_cot performs 3 rounds of self-refinement."),
        ("L", "refine_cot works without self-refinement."),
        ("N", "plan_solve trains a neural network to plan."),
        ("N", "plan_solve uses a calculator tool for arithmetic."),
        ("N", "plan_solve was optimized with gradient descent."),
        ("N", "Our approach uses a machine learning model to select prompts."),
        ("T", "sft_cot votes over five chains."),
        ("T", "sft_cot is training-free."),
        ("T", "zero_shot_cot was fine-tuned on the dev split."),
    ],
}

RIGHT = {  # kind -> [(fixture, sentence)]: each must pass, with at least one claim of its kind read
    "direction": [
        ("W", "verify_cot scored slightly higher than zero_shot_cot, a difference that was not significant (p = 0.11)."),
        ("W", "The technique outperformed the baseline on the held-out split."),
        ("W", "verify_cot improved accuracy over zero_shot_cot by 6 points."),
        ("W", "zero_shot_cot trailed verify_cot on the report split."),
        ("W", "It outperforms the baseline, although the difference is not statistically significant."),
        ("W", "The baseline was less accurate than verify_cot."),
        ("W", "Compared with zero_shot_cot, verify_cot raised accuracy."),
        ("W", "On the dev split, verify_cot was ahead of zero_shot_cot."),
        ("W", "zero_shot_cot was outperformed by verify_cot."),
        ("W", "Our method achieved higher accuracy than the baseline, but the gain is within noise."),
        ("W", "verify_cot made fewer errors than zero_shot_cot."),
        ("W", "The verifier helped: verify_cot beat the baseline."),
        ("W", "verify_cot did not improve significantly over zero_shot_cot."),
        ("L", "refine_cot underperformed zero_shot_cot on the report split."),
        ("L", "Self-refinement hurt accuracy: refine_cot fell behind the baseline."),
        ("L", "zero_shot_cot outperformed refine_cot."),
        ("L", "The baseline was more accurate than the proposed technique."),
        ("L", "refine_cot lowered accuracy relative to the baseline."),
        ("L", "Accuracy decreased with refine_cot compared to zero_shot_cot."),
        ("L", "refine_cot did not improve on the baseline."),
        ("S", "vote5_fewshot outperformed zero_shot_cot by 30 percentage points."),
        ("S", "zero_shot_cot scored lower than vote5_fewshot."),
        ("S", "Our approach improves over the baseline on the held-out split."),
        ("N", "plan_solve and zero_shot_cot reached the same accuracy."),
        ("N", "plan_solve did not outperform zero_shot_cot."),
        ("N", "plan_solve performed on par with the baseline."),
        ("T", "sft_cot outperformed zero_shot_cot on the report split."),
        ("T", "The fine-tuned checkpoint sft_cot beat the baseline."),
        ("T", "Our prompting strategy made fewer mistakes than the baseline."),
    ],
    "strength": [
        ("W", "verify_cot scored slightly higher than zero_shot_cot, not significant (p = 0.11)."),
        ("W", "verify_cot improved on zero_shot_cot, but the difference was not statistically significant."),
        ("W", "The improvement of verify_cot over the baseline is not significant (p = 0.11)."),
        ("W", "verify_cot showed a modest gain over zero_shot_cot."),
        ("W", "We cannot claim that verify_cot is significantly better than the baseline."),
        ("W", "The gain of verify_cot is small and not significant."),
        ("W", "verify_cot did not consistently outperform the baseline."),
        ("W", "It is not proven that verify_cot is better than zero_shot_cot."),
        ("W", "verify_cot was ahead on 8 problems and behind on 2, a difference that is not statistically "
              "significant."),
        ("S", "The results show that vote5_fewshot substantially outperforms zero_shot_cot."),
        ("S", "vote5_fewshot significantly outperformed the baseline (p < 0.001)."),
        ("S", "vote5_fewshot dramatically improved accuracy over zero_shot_cot."),
        ("S", "vote5_fewshot is clearly better than the baseline."),
        ("S", "The improvement is statistically significant."),
        ("S", "vote5_fewshot gave a large, significant improvement over the baseline."),
        ("L", "refine_cot was significantly worse than zero_shot_cot."),
        ("L", "refine_cot's drop relative to the baseline is statistically significant (p = 0.039)."),
        ("L", "refine_cot did not substantially hurt accuracy; the drop was modest."),
        ("L", "refine_cot did not significantly outperform zero_shot_cot."),
        ("L", "refine_cot and zero_shot_cot differ significantly."),
        ("N", "plan_solve showed no significant improvement over zero_shot_cot (1/5 vs 1/5, p = 1)."),
        ("N", "The difference between plan_solve and the baseline is not significant."),
        ("N", "plan_solve is not state-of-the-art, and its accuracy is not significantly higher."),
        ("T", "sft_cot improved on zero_shot_cot by 8 points, but the gain is not statistically significant "
              "(p = 0.08)."),
        ("T", "sft_cot was slightly better than the baseline."),
        ("T", "sft_cot did not always beat zero_shot_cot."),
        ("T", "There is no evidence that sft_cot is significantly better than the baseline."),
    ],
    "count": [
        ("W", "verify_cot won on 8 problems and lost on 2."),
        ("W", "verify_cot had 8 wins and 2 losses against the baseline."),
        ("W", "The technique was right on 8 problems where the baseline was wrong."),
        ("W", "Of the 10 problems where they disagreed, verify_cot won 8."),
        ("W", "verify_cot beat zero_shot_cot on 8 of the 10 problems where they disagreed."),
        ("W", "The two techniques disagreed on 10 problems."),
        ("W", "We evaluated both techniques on the same 100 held-out problems."),
        ("W", "The techniques tied on 90 problems."),
        ("W", "The baseline won on only 2 problems."),
        ("W", "verify_cot was ahead on 8 problems and behind on 2."),
        ("W", "On the dev split, both techniques were tuned on 50 problems."),
        ("S", "vote5_fewshot won 35 problems and lost 5."),
        ("S", "vote5_fewshot solved 35 problems that the baseline missed and missed 5 that it solved."),
        ("S", "The baseline won on 5 problems."),
        ("S", "vote5_fewshot solved 75 problems on the report split."),
        ("S", "There were 40 discordant pairs."),
        ("S", "vote5_fewshot and zero_shot_cot were compared on the same 100 problems."),
        ("L", "refine_cot won 2 problems and lost 10."),
        ("L", "The baseline had 10 wins and 2 losses against refine_cot."),
        ("L", "refine_cot was better on only 2 of the 12 problems where the two disagreed."),
        ("L", "zero_shot_cot solved 10 problems that refine_cot got wrong."),
        ("N", "On all 5 test problems, plan_solve matched the baseline."),
        ("N", "plan_solve won 0 problems and lost 0."),
        ("T", "sft_cot had 12 wins, 4 losses and 84 ties."),
        ("T", "sft_cot won 12 of the 16 discordant problems."),
        ("T", "sft_cot was evaluated on 100 report-split problems."),
        ("T", "On the report split, sft_cot lost only 4 problems to the baseline."),
        ("T", "The baseline won 4 problems that sft_cot missed."),
    ],
    "method": [
        ("W", "verify_cot adds a verifier that judges each chain's answer."),
        ("W", "verify_cot uses a single chain with no few-shot examples."),
        ("W", "verify_cot does not use self-consistency or majority voting."),
        ("W", "Unlike vote5_fewshot, verify_cot samples only one chain."),
        ("W", "The baseline, zero_shot_cot, uses no verifier."),
        ("W", "verify_cot was not fine-tuned; it is a prompting technique."),
        ("W", "Our technique adds a verifier to zero_shot_cot's prompt."),
        ("W", "The proposed technique does not use self-refinement."),
        ("W", "verify_cot judges each answer with an LLM judge before accepting it."),
        ("W", "We did not fine-tune the model."),
        ("S", "vote5_fewshot samples 5 chains and takes a majority vote."),
        ("S", "vote5_fewshot prepends 3 few-shot examples to the question."),
        ("S", "vote5_fewshot applies one round of self-refinement to each chain."),
        ("S", "vote5_fewshot is an ensemble over five sampled chains."),
        ("S", "vote5_fewshot has no verifier."),
        ("S", "vote5_fewshot was not trained; no weights were updated."),
        ("L", "refine_cot critiques its own answer and revises it over 2 rounds of self-refinement."),
        ("L", "refine_cot runs a separate planning step before solving."),
        ("L", "refine_cot uses a single chain without majority voting."),
        ("L", "refine_cot does not sample multiple chains."),
        ("N", "plan_solve adds a planning step but no verifier."),
        ("N", "plan_solve needs no external tools."),
        ("T", "sft_cot runs on a checkpoint that was fine-tuned with supervised fine-tuning."),
        ("T", "sft_cot was fine-tuned; its prompt uses a single chain."),
        ("T", "zero_shot_cot, the baseline, samples one chain."),
        ("T", "zero_shot_cot is zero-shot: it has no few-shot examples."),
        ("T", "Our technique runs on a fine-tuned checkpoint."),
    ],
}

WRONG_HELD_OUT = {  # sentences written before the checker was tuned on them (see the module doc)
    'direction': [
        ('W', 'Unfortunately, verify_cot performed poorly relative to the baseline, reducing accuracy.'),
        ('W', 'The verification step did not help; accuracy went down compared to zero_shot_cot.'),
        ('W', 'zero_shot_cot remains the stronger technique on this benchmark.'),
        ('L', 'Our proposed method yields better performance than the baseline.'),
        ('L', 'refine_cot leads to improved accuracy on the held-out set.'),
        ('L', 'Self-refinement boosts accuracy: refine_cot surpasses zero_shot_cot.'),
        ('S', 'vote5_fewshot fails to outperform zero_shot_cot.'),
        ('S', 'The baseline surpassed vote5_fewshot on the report split.'),
        ('N', 'plan_solve increased accuracy relative to zero_shot_cot.'),
        ('T', 'sft_cot underperforms zero_shot_cot.'),
        ('W', 'In conclusion, the verify_cot technique led to a decline in accuracy when compared with the '
              'zero_shot_cot baseline.'),
        ('W', 'Overall, our findings indicate that the baseline approach performs better than verify_cot.'),
        ('L', 'The results show an improvement in accuracy for refine_cot over the zero-shot baseline.'),
        ('L', 'As seen in Table 1, refine_cot achieves higher accuracy than zero_shot_cot.'),
        ('S', 'Interestingly, vote5_fewshot did worse than zero_shot_cot.'),
        ('T', 'We observe that sft_cot decreases performance relative to the baseline.'),
        ('W', 'While verify_cot reached 48%, it still lagged behind zero_shot_cot.'),
        ('S', "Despite its complexity, vote5_fewshot could not match the baseline's accuracy of 45%."),
        ('L', "The refine_cot approach enhanced the model's performance compared to zero-shot prompting with the "
              'baseline.'),
        ('N', 'plan_solve offers a clear advantage over zero_shot_cot in terms of accuracy.'),
        ('T', 'Fine-tuning hurt: sft_cot scored below the baseline.'),
        ('W', 'The baseline zero_shot_cot proved to be the more accurate method.'),
        ('W', 'Compared to the baseline, our verification approach produced lower scores.'),
        ('L', 'Thanks to self-refinement, refine_cot delivers higher accuracy than the baseline method.'),
        ('S', 'The zero_shot_cot baseline proved superior to vote5_fewshot.'),
        ('T', 'sft_cot was less effective than zero_shot_cot on the test set.'),
        ('N', 'Our technique improved on the baseline by a small margin.'),
    ],
    'strength': [
        ('W', 'verify_cot provides a significant boost in accuracy.'),
        ('W', 'This demonstrates the effectiveness of verify_cot over zero_shot_cot.'),
        ('W', 'verify_cot greatly enhances the accuracy of the model compared to the baseline.'),
        ('W', 'The results clearly indicate that the technique is superior to the baseline.'),
        ('N', 'plan_solve consistently improves accuracy across multiple tests.'),
        ('N', 'The technique is highly effective and reliable.'),
        ('S', 'vote5_fewshot provides only a marginal improvement over the baseline.'),
        ('L', 'refine_cot is a robust technique that outperforms zero_shot_cot.'),
        ('T', 'sft_cot achieves a statistically significant improvement over the baseline.'),
        ('T', 'Our technique sets a new state of the art for small models.'),
        ('W', 'Our experiments provide strong evidence that verify_cot improves accuracy.'),
        ('W', 'The verify_cot technique significantly enhances mathematical reasoning.'),
        ('N', "plan_solve greatly improves the model's accuracy on arithmetic problems."),
        ('W', 'These findings prove that verification is key to better accuracy.'),
        ('T', 'The technique has been shown to dramatically improve accuracy.'),
        ('L', 'refine_cot offers a substantial improvement in accuracy over zero_shot_cot.'),
        ('W', 'With 8 wins and only 2 losses, verify_cot is significantly better than zero_shot_cot.'),
        ('W', 'verify_cot yields a substantial 6-point improvement over the baseline.'),
        ('N', 'Our approach reliably improves the accuracy of small language models.'),
        ('S', 'vote5_fewshot improves accuracy by 30 points, though this is not significant.'),
        ('L', 'refine_cot decreased accuracy dramatically compared to zero_shot_cot.'),
        ('T', 'sft_cot consistently outperformed zero_shot_cot on the held-out split.'),
        ('W', 'The verifier is a powerful addition that markedly boosts accuracy over zero_shot_cot.'),
        ('W', 'verify_cot establishes a new state-of-the-art for prompting small models.'),
        ('S', 'vote5_fewshot yields a minor gain over the baseline.'),
        ('L', 'Our experiments confirm that refine_cot is more accurate than zero_shot_cot.'),
        ('T', 'sft_cot reliably beats the baseline.'),
    ],
    'count': [
        ('W', 'verify_cot answered 9 questions correctly that the baseline missed.'),
        ('W', 'verify_cot had 10 wins against 2 losses.'),
        ('S', 'The baseline was correct on 8 problems where vote5_fewshot was wrong.'),
        ('S', 'vote5_fewshot won on 38 problems.'),
        ('L', 'refine_cot lost on only 2 problems.'),
        ('N', 'plan_solve and zero_shot_cot disagreed on 3 problems.'),
        ('T', 'The evaluation used 80 held-out problems.'),
        ('T', 'sft_cot and the baseline tied on 90 problems.'),
        ('W', 'verify_cot solved 50 problems on the report split.'),
        ('S', 'vote5_fewshot solved 40 of the 45 problems where they disagreed.'),
        ('W', 'Out of 100 problems, verify_cot was correct on 12 more problems than the baseline.'),
        ('S', 'In total, vote5_fewshot won 36 and lost 4.'),
        ('L', 'refine_cot beat the baseline on 10 problems.'),
        ('T', 'The comparison is based on 200 paired problems.'),
        ('S', 'Among the 100 report-split problems, the two techniques disagreed on 50.'),
        ('L', 'refine_cot had 3 wins and 10 losses.'),
        ('T', 'Of the 16 problems on which the techniques differed, sft_cot won 14.'),
        ('W', 'verify_cot outperformed the baseline on 9 problems while losing on 2.'),
        ('S', 'Both techniques were evaluated on 90 problems from the report split.'),
        ('L', 'refine_cot answered 4 problems correctly that zero_shot_cot got wrong.'),
        ('T', 'The baseline won 6 problems that sft_cot missed.'),
    ],
    'method': [
        ('W', 'verify_cot leverages self-consistency to select the most common answer.'),
        ('W', 'The proposed technique uses majority voting across multiple samples.'),
        ('W', 'verify_cot uses few-shot demonstrations to guide the model.'),
        ('W', 'Our method employs reinforcement learning to optimize the prompts.'),
        ('S', 'vote5_fewshot uses a single chain of reasoning.'),
        ('S', 'vote5_fewshot relies on a judge model to verify each answer.'),
        ('L', 'refine_cot uses an ensemble of reasoning paths.'),
        ('N', 'plan_solve fine-tunes the language model on arithmetic problems.'),
        ('N', 'The technique leverages sophisticated algorithms to plan its solution.'),
        ('T', 'sft_cot uses retrieval-augmented generation to find similar problems.'),
        ('W', 'verify_cot generates multiple candidate solutions and selects the best one.'),
        ('W', 'The technique trains a reward model to score answers.'),
        ('N', 'plan_solve uses a self-consistency mechanism with majority voting to improve reliability.'),
        ('S', 'vote5_fewshot uses a verifier to filter incorrect chains.'),
        ('L', 'refine_cot employs deep learning to refine its answers.'),
        ('W', 'verify_cot combines chain-of-thought reasoning with few-shot prompting.'),
        ('S', 'vote5_fewshot draws 10 samples per problem and aggregates them.'),
        ('L', 'refine_cot uses a verifier to decide when to stop refining.'),
        ('N', 'plan_solve was trained using reinforcement learning from human feedback.'),
        ('T', 'sft_cot uses majority voting over several chains.'),
        ('W', 'The approach integrates an external calculator for arithmetic steps.'),
        ('W', 'verify_cot samples ten reasoning paths and picks the majority answer.'),
        ('S', 'vote5_fewshot does not include any examples in the prompt; it is purely zero-shot.'),
        ('L', 'refine_cot was trained with GRPO on the dev split.'),
        ('N', 'plan_solve iteratively refines its own answers.'),
        ('T', 'sft_cot uses an ensemble of five prompts.'),
    ],
}
RIGHT_HELD_OUT = {  # sentences written before the checker was tuned on them (see the module doc)
    'direction': [
        ('W', 'verify_cot achieved a higher accuracy than zero_shot_cot on the report split.'),
        ('W', 'Adding a verifier raised accuracy relative to the baseline, though the gain was not significant.'),
        ('L', 'refine_cot performed worse than the baseline.'),
        ('L', 'The self-refinement step reduced accuracy compared with zero_shot_cot.'),
        ('S', 'vote5_fewshot beats zero_shot_cot by a wide margin.'),
        ('S', 'The baseline fell short of vote5_fewshot.'),
        ('N', 'plan_solve matched zero_shot_cot on the held-out problems.'),
        ('T', 'sft_cot scored higher than zero_shot_cot on the report split.'),
        ('T', 'The fine-tuned checkpoint improved accuracy over the baseline.'),
        ('W', 'zero_shot_cot had lower accuracy than verify_cot.'),
        ('W', 'In conclusion, the verify_cot technique led to a small, non-significant increase in accuracy over the '
              'zero_shot_cot baseline.'),
        ('L', 'Overall, our findings indicate that the baseline approach performs better than refine_cot.'),
        ('S', 'As seen in Table 1, vote5_fewshot achieves higher accuracy than zero_shot_cot.'),
        ('T', 'We observe that sft_cot increases accuracy relative to the baseline.'),
        ('W', 'While verify_cot reached 48%, zero_shot_cot lagged behind at 42%.'),
        ('S', "vote5_fewshot exceeded the baseline's accuracy of 45% by a wide margin."),
        ('L', 'Self-refinement did not help: refine_cot scored below the baseline.'),
        ('T', 'sft_cot edges out the baseline on the report split.'),
        ('N', 'plan_solve and zero_shot_cot performed identically, each solving 1 of 5 problems.'),
        ('W', 'Compared to the baseline, our verification approach produced higher scores.'),
        ('L', 'Despite self-refinement, refine_cot delivers lower accuracy than the baseline method.'),
        ('S', 'vote5_fewshot proved superior to the zero_shot_cot baseline.'),
        ('T', 'sft_cot was more accurate than zero_shot_cot on the test set.'),
    ],
    'strength': [
        ('W', 'The difference is not statistically significant (p = 0.11).'),
        ('W', "verify_cot's improvement over the baseline did not reach statistical significance."),
        ('S', "vote5_fewshot's gain over zero_shot_cot is large and statistically significant."),
        ('S', 'vote5_fewshot clearly outperforms the baseline (p < 0.001).'),
        ('L', 'refine_cot was significantly less accurate than the baseline (p = 0.039).'),
        ('N', 'plan_solve and zero_shot_cot show no significant difference.'),
        ('T', 'sft_cot was marginally better than the baseline, a difference that is not significant.'),
        ('T', 'We cannot conclude that sft_cot significantly outperforms zero_shot_cot.'),
        ('S', 'The improvement of vote5_fewshot is substantial and significant.'),
        ('S', 'Our experiments provide strong evidence that vote5_fewshot improves accuracy (p < 0.001).'),
        ('S', 'vote5_fewshot significantly enhances accuracy over the baseline.'),
        ('W', 'The gain of verify_cot is not statistically significant, so we cannot claim an improvement.'),
        ('W', 'With 8 wins and only 2 losses, verify_cot is ahead, but the difference is not significant (p = '
              '0.11).'),
        ('S', 'vote5_fewshot improves accuracy by 30 points, a statistically significant difference.'),
        ('L', 'refine_cot significantly reduced accuracy compared to zero_shot_cot (p = 0.039).'),
        ('T', "sft_cot's advantage over the baseline is modest and not statistically significant."),
        ('W', 'verify_cot shows a small, non-significant advantage over zero_shot_cot.'),
        ('S', 'vote5_fewshot markedly boosts accuracy over zero_shot_cot.'),
        ('L', 'Our experiments confirm that refine_cot is less accurate than zero_shot_cot.'),
        ('N', 'There is no significant difference between plan_solve and the baseline.'),
    ],
    'count': [
        ('W', 'verify_cot answered 8 questions correctly that the baseline missed.'),
        ('W', 'verify_cot had 8 wins against 2 losses.'),
        ('S', 'The baseline was correct on 5 problems where vote5_fewshot was wrong.'),
        ('S', 'vote5_fewshot won on 35 problems.'),
        ('L', 'refine_cot lost on 10 problems.'),
        ('N', 'plan_solve and zero_shot_cot disagreed on 0 problems.'),
        ('T', 'The evaluation used 100 held-out problems.'),
        ('T', 'sft_cot and the baseline tied on 84 problems.'),
        ('W', 'verify_cot solved 48 problems on the report split.'),
        ('S', 'vote5_fewshot solved 35 of the 40 problems where they disagreed.'),
        ('S', 'In total, vote5_fewshot won 35 and lost 5.'),
        ('L', 'refine_cot beat the baseline on 2 problems.'),
        ('T', 'The comparison is based on 100 paired problems.'),
        ('W', 'verify_cot produced the correct answer on 8 problems that zero_shot_cot got wrong, and the reverse '
              'happened on 2.'),
        ('S', 'Among the 100 report-split problems, the two techniques disagreed on 40.'),
        ('L', 'refine_cot had 2 wins and 10 losses.'),
        ('T', 'Of the 16 problems on which the techniques differed, sft_cot won 12.'),
        ('W', 'verify_cot outperformed the baseline on 8 problems while losing on 2.'),
        ('S', 'Both techniques were evaluated on 100 problems from the report split.'),
        ('L', 'refine_cot answered 2 problems correctly that zero_shot_cot got wrong.'),
        ('T', 'The baseline won 4 problems that sft_cot missed.'),
    ],
    'method': [
        ('W', 'verify_cot asks the model to verify its answer with a separate judge prompt.'),
        ('W', 'The proposed technique does not use majority voting.'),
        ('W', 'verify_cot is a zero-shot prompt with a verifier.'),
        ('W', 'Our method requires no fine-tuning.'),
        ('S', 'vote5_fewshot samples five reasoning chains and aggregates them by majority vote.'),
        ('S', 'vote5_fewshot uses three in-context examples.'),
        ('L', 'refine_cot uses self-refinement to revise its answers.'),
        ('N', 'plan_solve adds a separate planning step before the solution.'),
        ('T', 'sft_cot was obtained by supervised fine-tuning of the base model.'),
        ('T', 'sft_cot uses a single chain without a verifier.'),
        ('S', 'vote5_fewshot generates multiple candidate solutions and takes a majority vote.'),
        ('W', 'verify_cot checks its answer with a verifier prompt.'),
        ('S', 'vote5_fewshot draws 5 samples per problem and aggregates them by majority vote.'),
        ('T', 'sft_cot is a fine-tuned checkpoint prompted with a single chain.'),
        ('W', 'The approach adds a verifier but no external tools.'),
        ('S', 'vote5_fewshot samples five reasoning paths and picks the majority answer.'),
        ('W', 'verify_cot includes no examples in the prompt; it is zero-shot.'),
        ('L', 'refine_cot iteratively refines its own answers.'),
        ('T', 'sft_cot was trained with supervised fine-tuning and uses one chain.'),
    ],
}
for _table, _held in ((WRONG, WRONG_HELD_OUT), (RIGHT, RIGHT_HELD_OUT)):
    for _kind, _rows in _held.items():
        _table[_kind] = _table[_kind] + _rows

NEUTRAL = [  # prose with no claim the records contradict: goals, hypotheses, cited work, method, limits
    ('W', 'Large language models often make arithmetic errors.'),
    ('W', 'Chain-of-thought prompting improves reasoning in large models [1].'),
    ('W', 'We evaluate whether adding a verifier improves accuracy.'),
    ('W', 'The technique was tuned on a dev split and evaluated once on a held-out split.'),
    ('W', 'Future work could test more chains or a stronger verifier.'),
    ('W', 'We compare verify_cot with the baseline zero_shot_cot on a held-out split; the results table gives the '
          'verified accuracies.'),
    ('W', 'Hypothesis: a verification step will reduce arithmetic slips.'),
    ('W', 'The measured results are reported in the table; conclusions are limited by the subset size.'),
    ('W', 'We study the goal: Find a prompting technique that improves accuracy on basic arithmetic.'),
    ('S', 'Self-consistency [2] samples several reasoning paths and takes a majority vote.'),
    ('W', 'Small models are prone to errors in multi-step arithmetic, and better prompting can help.'),
    ('W', 'The higher the temperature, the more diverse the chains.'),
    ('W', 'A larger report split would narrow the confidence interval.'),
    ('L', 'Self-refinement has been reported to help larger models (Madaan et al., 2023).'),
    ('W', 'The verifier is a second call that judges each answer.'),
    ('W', 'Each technique was run with the same model and decoding settings.'),
    ('S', "The lower bound of the confidence interval is above the baseline's accuracy."),
    ('W', 'We expect that a stronger verifier would improve accuracy further.'),
    ('W', 'This paper asks whether a verification step helps small models.'),
    ('W', 'Our goal is a technique that outperforms zero-shot chain-of-thought.'),
]


def judge(fixture: str, sentence: str, specs=None) -> list:
    records, comparison = FIXTURES[fixture]
    return check_claims(sentence, records, comparison, fix=False, specs=specs).claims


def caught(kind: str, claims: list) -> bool:
    """Rejected by a claim of ``kind`` (a false sentence rejected only for another reason is not caught)."""
    return any(c.kind == kind and c.status != "ok" for c in claims)


def passes(kind: str, claims: list) -> bool:
    """Accepted, and read: at least one claim of ``kind`` was found (a sentence the checker skipped proves
    nothing)."""
    return all(c.status == "ok" for c in claims) and any(c.kind == kind for c in claims)


def _cases(table: dict) -> list:
    return [(kind, f, s) for kind in KINDS for f, s in table[kind]]


def test_table_sizes():
    for kind in KINDS:
        assert len(WRONG[kind]) >= 25 and len(RIGHT[kind]) >= 25, kind
    assert len(NEUTRAL) >= 20


@pytest.mark.parametrize("kind,fixture,sentence", _cases(WRONG), ids=[f"{k}:{s[:45]}" for k, _, s in _cases(WRONG)])
def test_wrong_prose_is_rejected(kind, fixture, sentence):
    claims = judge(fixture, sentence)
    assert caught(kind, claims), [(c.kind, c.text, c.status, c.expected) for c in claims]


@pytest.mark.parametrize("kind,fixture,sentence", _cases(RIGHT), ids=[f"{k}:{s[:45]}" for k, _, s in _cases(RIGHT)])
def test_correct_prose_passes(kind, fixture, sentence):
    claims = judge(fixture, sentence)
    assert passes(kind, claims), [(c.kind, c.text, c.status, c.expected) for c in claims]


@pytest.mark.parametrize("fixture,sentence", NEUTRAL, ids=[s[:50] for _, s in NEUTRAL])
def test_neutral_prose_passes(fixture, sentence):
    claims = judge(fixture, sentence)
    assert all(c.status == "ok" for c in claims), [(c.kind, c.text, c.status, c.expected) for c in claims]


# -- fixing: rewritten from the records or removed, with a note -------------------------------------------


def _fix(fixture: str, text: str, specs=None):
    records, comparison = FIXTURES[fixture]
    return check_claims(text, records, comparison, specs=specs)


def test_a_wrong_direction_is_replaced_by_the_comparison_sentence():
    res = _fix("W", "The method works. In the end, verify_cot resulted in a slight decrease in accuracy compared to "
                    "the baseline.")
    new = ("On the report split, verify_cot scored 48.0% (48/100) against the baseline zero_shot_cot's 42.0% "
           "(42/100): +6.0 points, 8 wins and 2 losses, McNemar p = 0.11, not significant.")
    assert res.text == "The method works. " + new
    bad = [c for c in res.claims if c.status != "ok"]
    assert [(c.kind, c.status, c.replacement) for c in bad] == [("direction", "fixed", new), ("strength", "fixed", new)]
    assert bad[0].note.startswith("'decrease' does not match verify_cot (report): 48.0% (48/100)")
    assert "replaced by one generated from the records" in bad[0].note
    # the generated sentence passes the checker it came from
    assert all(c.status == "ok" for c in judge("W", new)) and {c.kind for c in judge("W", new)} >= {"count", "strength"}


def test_an_overclaim_by_role_is_replaced_and_significant_wording_kept_when_true():
    res = _fix("S", "Our method significantly outperforms the baseline.")
    assert res.text == res.claims[0].sentence  # true (p < 0.001): kept as written
    res = _fix("W", "Our method significantly outperforms the baseline.")
    assert res.text.startswith("On the report split, verify_cot scored 48.0%") and "not significant" in res.text
    assert {c.status for c in res.claims if c.verdict != "ok"} == {"fixed"}


def test_a_wrong_method_is_replaced_by_the_spec_description_or_removed():
    res = _fix("W", "verify_cot samples several reasoning chains and takes a majority vote.")
    assert res.text == ("verify_cot ran 1 chain per problem, with no few-shot examples, a verifier and no "
                        "self-refinement.")
    assert all(c.status == "ok" for c in judge("W", res.text))
    res = _fix("W", "Intro. The method uses advanced algorithms such as automatic regression.")
    assert res.text == "Intro."  # about "the method" only: removed, not rewritten
    removed = [c for c in res.claims if c.status == "removed"]
    assert {c.value for c in removed} == {"algorithms", "training"}
    assert all("the sentence was removed: 'The method uses advanced algorithms" in c.note for c in removed)


def test_every_fixed_sentence_passes_the_checker():
    for kind in KINDS:
        for fixture, sentence in WRONG[kind]:
            records, comparison = FIXTURES[fixture]
            fixed = check_claims(sentence, records, comparison).text
            again = check_claims(fixed, records, comparison, fix=False).claims
            assert all(c.status == "ok" for c in again), (sentence, fixed)


def test_variability_and_state_of_the_art_claims_are_never_supported():
    res = _fix("N", "The technique has been proven to reduce variability in accuracy across multiple tests.")
    assert "variability" not in res.text and res.text.startswith("On the report split, plan_solve scored 20.0%")
    kinds = {(c.kind, c.value) for c in res.claims if c.verdict == "unsupported"}
    assert ("strength", "variability") in kinds


def test_wrong_counts_are_replaced_and_a_wrong_number_beside_a_word_is_covered_by_the_same_sentence():
    res = _fix("W", "verify_cot had 10 wins and 2 losses.")
    assert res.text.startswith("On the report split, verify_cot scored 48.0% (48/100)")
    res = _fix("W", "verify_cot reached 55% and clearly beat the baseline.")  # a wrong number and an overclaim
    assert res.text.startswith("On the report split, verify_cot scored 48.0% (48/100)")
    assert {c.kind for c in res.claims if c.status == "fixed"} == {"percent", "strength"}


def test_an_uncited_literature_claim_about_the_baseline_is_removed_and_a_cited_one_kept():
    text = "The baseline technique has been shown to improve the accuracy of embedded models."
    assert caught("strength", judge("W", text))
    assert _fix("W", text.replace(".", " [2].")).text == text.replace(".", " [2].")


# -- specs: from the records, or by spec_hash -------------------------------------------------------------


def test_specs_by_hash_describe_records_without_their_own_spec():
    records, comparison = FIXTURES["W"]
    bare = [{k: v for k, v in r.items() if k != "spec"} | {"spec_hash": f"h-{r['technique']}"} for r in records]
    specs = {f"h-{name}": spec for name, spec in SPECS.items()}
    text = "verify_cot samples several chains and takes a majority vote."
    assert caught("method", check_claims(text, bare, comparison, fix=False, specs=specs).claims)
    # no spec known: the feature cannot be judged and is not claimed either way ...
    assert not [c for c in check_claims(text, bare, comparison, fix=False).claims if c.kind == "method"]
    # ... but training words are judged from the records (no checkpoint behind verify_cot)
    trained = check_claims("verify_cot was fine-tuned with reinforcement learning.", bare, comparison, fix=False)
    assert caught("method", trained.claims)


def test_spec_objects_are_accepted():
    from agentlab.techniques import TechniqueSpec

    records, comparison = FIXTURES["W"]
    bare = [{k: v for k, v in r.items() if k != "spec"} for r in records]
    spec = TechniqueSpec.parse({"name": "verify_cot", "verifier": {}})
    ok = check_claims("verify_cot adds a verifier.", bare, comparison, fix=False, specs=[spec]).claims
    assert [(c.kind, c.status) for c in ok] == [("method", "ok")]


# -- papers and drafts ------------------------------------------------------------------------------------


def test_check_paper_and_verify_draft_read_prose_without_numbers():
    records, comparison = FIXTURES["W"]
    md = "\n".join(["# Verification for arithmetic", "", "## Abstract", "",
                    "verify_cot resulted in a slight decrease in accuracy compared to the baseline method.", "",
                    "## 2 Related work", "", "- [p1] *Voting*: it substantially outperforms everything.", "",
                    "## 3 Method", "", "The method uses advanced algorithms such as automatic regression.", ""])
    bad = [(c["section"], c["kind"]) for c in check_paper(md, records, comparison) if c["status"] != "ok"]
    assert bad == [("abstract", "direction"), ("abstract", "strength"), ("method", "method"), ("method", "method")]
    draft = {"title": "Verification helps", "abstract": "verify_cot outperformed the baseline.",
             "introduction": "The baseline technique has been shown to improve the accuracy of embedded models.",
             "method": "", "discussion": "", "conclusion": ""}
    clean, claims = verify_draft(draft, records, comparison)
    assert clean["abstract"] == draft["abstract"]  # true: a win, no strength claimed
    assert clean["introduction"].startswith("On the report split, verify_cot scored 48.0% (48/100) against")
    assert [(c["section"], c["kind"], c["status"]) for c in claims if c["status"] != "ok"] == [
        ("introduction", "direction", "fixed"), ("introduction", "strength", "fixed")]


def test_two_sentences_rewritten_to_the_same_one_are_said_once():
    """Seen in a lab's conclusion: two unsupported claims both became the same generated sentence, printed twice."""
    from agentlab.lab.report.claims import check_claims

    recs = [{"technique": "sft_e3", "split": "report", "n": 300, "correct": 76, "accuracy": 76 / 300, "record_id": "a"},
            {"technique": "zero_shot_cot", "split": "report", "n": 300, "correct": 61, "accuracy": 61 / 300,
             "record_id": "b"}]
    comp = {"n": 300, "wins": 38, "losses": 23, "ties": 239, "delta": 0.05, "p_value": 0.072}
    text = check_claims("sft_e3 significantly outperforms zero_shot_cot. It is proven that sft_e3 is clearly better "
                        "than zero_shot_cot.", recs, comp).text
    assert text.count("McNemar p = 0.072, not significant.") == 1 and "significantly" not in text
