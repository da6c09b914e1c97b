"""Test doubles for lab tests: ``ScriptedLabLLM``, a scripted OpenAI-compatible server on loopback.

It is a real HTTP server (so the real gateway, litellm and the harness's httpx client are exercised)
that plays two parts, told apart by the gateway's JSON-schema instruction in the system message:

- the agents' LLM: answers each structured request with a scripted JSON object chosen by the
  schema's title (``ReportDraft``, ``TechniqueProposal``, ...); enum fields get a valid value;
- the model under study: answers benchmark questions it was given the gold answers for, correctly
  for a deterministic share of problems that depends on the prompt (so techniques differ).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from typing import Any

from tests.fakes import ScriptedLLMServer

SCHEMA_MARK = "Answer with a single JSON object that matches this JSON schema"

PLANTED_WRONG = "In our tests the technique reached 97.5% accuracy on every subset."

DEFAULT_SCRIPT: dict[str, Any] = {
    # planted: the earlier paper reports no such number (its summary is checked against its own records)
    "PaperNote": {"summary": "An earlier lab compared prompting techniques. Majority voting reached 88.5% there.",
                  "useful_idea": "sample several chains"},
    "PlanProposal": {"hypothesis": "A careful instruction improves accuracy.", "technique": "zero_shot_cot"},
    "PlanCritique": {"feedback": "Testable; go ahead.", "approve": True},
    "ResearchPlan": {"hypothesis": "A careful instruction improves accuracy over the baseline.",
                     "techniques": ["plan_and_solve", "zero_shot_cot"], "rationale": "cheap and testable"},
    "TechniqueProposal": {"technique": "plan_and_solve", "num_chains": 1, "temperature": 0.0, "max_tokens": 64,
                          "instruction": "Be careful with signs.", "rationale": "careful arithmetic"},
    "JobFix": {"action": "simplify", "max_tokens": 64, "explanation": "fewer moving parts"},
    "Interpretation": {"summary": "The tuned technique did better on the report split than the baseline.",
                       "hypothesis_supported": True, "limitation": "tiny subsets"},
    "ReportDraft": {"title": "Careful instructions for small-model arithmetic",
                    "abstract": "We tune a prompting technique on a dev split and report it on a held-out split.",
                    "introduction": "Small models make arithmetic slips.",
                    "method": "We add an instruction to plan-and-solve prompting.",
                    "discussion": "The results table shows the measured accuracies. " + PLANTED_WRONG,
                    "conclusion": "Careful instructions are cheap to try."},
    # planted: a review is published, so its numbers are checked like the paper's
    "Review": {"summary": "A small study. The technique reached 97.5% accuracy.", "strength": "held-out split",
               "weakness": "tiny n", "soundness": 3,
               "presentation": 3, "contribution": 2, "overall": 6, "confidence": 3},
}


class ScriptedLabLLM(ScriptedLLMServer):
    def __init__(self, answers: dict[str, str] | None = None, script: dict[str, Any] | None = None,
                 mus_delay_s: float = 0.0, agent_delay_s: float = 0.0):
        super().__init__(default=self.reply, usage=_word_counts)
        self.answers = dict(answers or {})
        self.script = {**DEFAULT_SCRIPT, **(script or {})}
        self.mus_delay_s, self.agent_delay_s = mus_delay_s, agent_delay_s
        self.agent_calls: list[str] = []
        self.agent_prompts: list[str] = []  # every message the agents sent (what they were shown)
        self.mus_calls = 0
        self._lock = threading.Lock()

    def reply(self, body: dict) -> str:
        """The agents' part when the gateway's schema instruction is there, else the model under study."""
        is_agent = any(SCHEMA_MARK in str(m.get("content", "")) for m in body.get("messages", [])
                       if m.get("role") == "system")
        time.sleep(self.agent_delay_s if is_agent else self.mus_delay_s)
        return self.agent_reply(body) if is_agent else self.mus_reply(body)

    # -- answers ------------------------------------------------------------------------------------
    def agent_reply(self, body: dict) -> str:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        schema = json.loads(system[system.index("{", system.index(SCHEMA_MARK)):])
        title = schema.get("title", "")
        with self._lock:
            self.agent_calls.append(title)
            self.agent_prompts.append("\n".join(str(m.get("content", "")) for m in body["messages"]))
        obj = self.script.get(title)
        obj = obj(body) if callable(obj) else json.loads(json.dumps(obj if obj is not None else {}))
        for name, prop in schema.get("properties", {}).items():  # keep enum fields valid
            enum = prop.get("enum") or (prop.get("items") or {}).get("enum")
            if enum and name in obj:
                if isinstance(obj[name], list):
                    obj[name] = [v for v in obj[name] if v in enum] or [enum[0]]
                elif obj[name] not in enum:
                    obj[name] = enum[0]
        return json.dumps(obj)

    def mus_reply(self, body: dict) -> str:
        with self._lock:
            self.mus_calls += 1
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        gold = next((a for q, a in self.answers.items() if q in text), None)
        if gold is None:
            return "I am not sure. \\boxed{0}"
        share = 60 if "careful" in text.lower() else 35
        h = int(hashlib.sha256((text + str(body.get("temperature"))).encode()).hexdigest()[:8], 16) % 100
        return f"Let me compute. The answer is \\boxed{{{gold if h < share else gold + '1'}}}"


def _word_counts(body: dict, text: str) -> tuple[int, int]:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])), len(text.split())


def answers_for(benchmark: str, data_dir: Any, n: int = 60) -> dict[str, str]:
    """Question -> gold answer of the dev and report splits the lab will draw (for the double)."""
    from agentlab.bench import load_benchmark

    out = {}
    for split in ("dev", "report"):
        for p in load_benchmark(benchmark, data_dir, subset={"split": split, "limit": n}):
            out[p.question] = p.answer
    return out


def lab_env(llm_url: str) -> dict[str, str]:
    """Environment that points a lab's agents and model under study at the double."""
    return {
        "AGENTLAB_AGENTS__MODEL": "openai/scripted-test-double",
        "AGENTLAB_AGENTS__API_BASE": llm_url,
        "AGENTLAB_AGENTS__API_KEY": "sk-test-double",
        "AGENTLAB_MODEL_UNDER_STUDY__ENGINE": "external",
        "AGENTLAB_MODEL_UNDER_STUDY__URL": llm_url,
        "AGENTLAB_MODEL_UNDER_STUDY__MODEL": "scripted-test-double",
        "AGENTLAB_LLM__MAX_RETRIES": "1",
        "AGENTLAB_LLM__BACKOFF_BASE_S": "0.01",
    }


_ = re  # (kept for scripted callables in tests)
