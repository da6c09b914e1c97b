"""Verified reports, one module per concern: numbers come from the harness, never from the LLM.

- ``tables``: results table, McNemar line and the one-line summaries agents are shown, from records.
- ``claims``: the claim checker (numbers in prose against the records; fix or remove misses).
- ``figures``: the accuracy figure (PNG).
- ``latex``: the LaTeX document and the TeX engine, if one is installed.
- ``paper``: assembly of the Markdown paper and writing the run's output files.

A *record* is the lab's normalized view of an evaluation summary (see
``agentlab.lab.experiments.normalize_record``): record_id, job_id, benchmark, split, technique,
spec_hash, model, n, correct, accuracy, ci_low, ci_high, tokens_per_problem, and the model replies (``calls``)
of which ``truncated`` were cut at ``max_tokens``.
"""
