"""The agent roles of a lab: prompts (``agents/prompts/*.md``), structured outputs and node functions.

One module per role: professor, postdoc, phd_student, ml_engineer, sw_engineer, reviewer.
Every LLM output is a small, flat pydantic model obtained through ``agentlab.llm.gateway.Gateway``
(grammar-constrained on llama.cpp); when the model gives nothing usable, the role falls back
to a safe default and says so in the lab's notes.
"""
