"""The CLI tests drive labs with the lab tests' fixtures: the scripted LLM double, the embedder and a real
preprint server on loopback."""

from tests.lab.conftest import answers, embedder, llm, preprint  # noqa: F401 - fixtures, found here by pytest
