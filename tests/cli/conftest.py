"""The CLI tests drive labs with the lab tests' fixtures: the scripted LLM double and the embedder."""

from tests.lab.conftest import answers, embedder, llm  # noqa: F401 - fixtures, found here by pytest
