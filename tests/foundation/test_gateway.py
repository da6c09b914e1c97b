"""Gateway logic against a scripted OpenAI-compatible server on loopback (a test double for the LLM)."""

import asyncio

import pytest
from pydantic import BaseModel

from agentlab.config import load_settings
from agentlab.llm.gateway import BudgetExceeded, Gateway, GatewayError, StructuredOutputError, extract_json
from tests.fakes import ScriptedLLMServer


class Verdict(BaseModel):
    label: str
    score: int


@pytest.fixture
def server():
    with ScriptedLLMServer(model="gpt-4o-mini") as srv:
        yield srv


# Calls that should succeed get a generous client timeout, so that a busy machine never turns a slow
# answer into a timeout and an extra retry (the tests count requests exactly). A test that needs a
# timeout to fire makes the scripted server hang far longer than that test's timeout instead.
GENEROUS_TIMEOUT_S = 60
HANG_S = 120  # a scripted hang: far past every timeout below


def make_gateway(server, monkeypatch, run_id="run-1", **env):
    monkeypatch.setenv("AGENTLAB_AGENTS__MODEL", "openai/gpt-4o-mini")
    monkeypatch.setenv("AGENTLAB_AGENTS__API_BASE", server.url)
    monkeypatch.setenv("AGENTLAB_AGENTS__API_KEY", "sk-test")
    monkeypatch.setenv("AGENTLAB_LLM__BACKOFF_BASE_S", "0.01")
    monkeypatch.setenv("AGENTLAB_LLM__TIMEOUT_S", str(GENEROUS_TIMEOUT_S))
    for k, v in env.items():
        monkeypatch.setenv(f"AGENTLAB_{k}", str(v))
    return Gateway(load_settings(), lab="lab-a", run_id=run_id)


def test_retries_429_500_timeout_and_invalid_json_then_succeeds(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("status", 429), ("status", 500), ("sleep", HANG_S), ("invalid_json",), ("text", "fine"))
    # 5 s: the hang times out, and the quick answers have time to spare on a busy machine
    resp = gw.complete("hello", role="postdoc", timeout=5)
    assert resp.text == "fine"
    assert len(server.requests) == 5
    rows = gw.ledger.summary(group_by="role")
    assert rows[0]["key"] == "postdoc" and rows[0]["calls"] == 1 and rows[0]["tokens_in"] == 10


def test_retries_are_bounded(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch, LLM__MAX_RETRIES=2)
    server.push(*[("status", 503)] * 5)
    with pytest.raises(GatewayError, match="after 3 attempt"):
        gw.complete("hello")
    assert len(server.requests) == 3
    assert gw.ledger.summary()[0]["errors"] == 1


def test_client_errors_are_not_retried(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("status", 401))
    with pytest.raises(GatewayError, match="API key was rejected"):
        gw.complete("hello")
    assert len(server.requests) == 1


def test_async_calls_retry_too(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("status", 429), ("text", "async ok"))

    async def go():
        return await asyncio.gather(gw.acomplete("a"), gw.acomplete("b"))

    results = asyncio.run(go())
    assert sorted(r.text for r in results) == ["async ok", "ok"]
    assert len(server.requests) == 3


def test_structured_output_reasks_with_the_validation_error(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("text", '{"label": "good"}'), ("text", 'Sure! ```json\n{"label": "good", "score": 7}\n```'))
    verdict = gw.structured("judge this", Verdict, role="reviewer")
    assert verdict == Verdict(label="good", score=7)
    reask = server.requests[1]["messages"][-1]["content"]
    assert "score" in reask and "Field required" in reask
    # the schema reaches the provider as a JSON-schema response format
    assert server.requests[0]["response_format"]["type"] == "json_schema"


def test_ledger_counts_structured_enforcement_reasks_and_fallbacks_per_role(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("text", '{"label": "good"}'), ("text", '{"label": "good", "score": 7}'))
    gw.structured("judge this", Verdict, role="reviewer")
    gw.complete("plain", role="reviewer")
    gw.note_fallback("postdoc", "research plan")
    rows = {r["key"]: r for r in gw.ledger.summary(group_by="role")}
    # two structured calls through the provider's JSON schema (no grammar here), the second one a re-ask
    assert (rows["reviewer"]["calls"], rows["reviewer"]["reasks"], rows["reviewer"]["grammar"]) == (3, 1, 0)
    assert (rows["postdoc"]["calls"], rows["postdoc"]["fallbacks"]) == (0, 1)
    kinds = [r["structured"] for r in gw.ledger.all("SELECT structured FROM llm_calls WHERE fallback = 0")]
    assert kinds == ["json_schema", "json_schema", None]
    assert gw.ledger.totals("run-1").calls == 3  # a fallback is not a call


def test_structured_output_gives_up_after_the_bound(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch, LLM__STRUCTURED_RETRIES=1)
    server.push(("text", "no json here"), ("text", '{"label": 3}'))
    with pytest.raises(StructuredOutputError) as exc:
        gw.structured("judge this", Verdict)
    assert len(server.requests) == 2 and "Verdict" in str(exc.value)


def test_async_structured(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("text", '{"label": "x", "score": 1}'))
    assert asyncio.run(gw.astructured("q", Verdict)) == Verdict(label="x", score=1)


def test_token_budget_stops_the_run(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch, BUDGETS__MAX_TOKENS=30)
    gw.complete("one")
    gw.complete("two")  # 30 tokens spent now
    with pytest.raises(BudgetExceeded, match="token budget exhausted: used 30 of 30"):
        gw.complete("three")
    assert len(server.requests) == 2
    # a new gateway on the same run (a resumed lab) keeps counting
    again = Gateway(gw.settings, run_id="run-1")
    with pytest.raises(BudgetExceeded):
        again.complete("four")
    # another run has its own budget
    Gateway(gw.settings, run_id="run-2").complete("five")


def test_usd_budget_uses_the_offline_cost_map(workspace, server, monkeypatch):
    # a call costs $0.0000045 (10 prompt + 5 completion tokens of gpt-4o-mini): two fit, a third does not
    gw = make_gateway(server, monkeypatch, BUDGETS__MAX_USD="0.00001")
    first = gw.complete("one")
    assert first.cost_usd > 0  # gpt-4o-mini is priced in litellm's local cost map
    gw.complete("two")
    with pytest.raises(BudgetExceeded, match=r"USD budget exhausted: spent \$0.000009 of \$0.000010"):
        gw.complete("three")
    assert len(server.requests) == 2 and gw.spent()[0] <= 0.00001
    # each call was sent with no more completion tokens than the rest of the budget could pay for
    assert 1 <= server.requests[0]["max_tokens"] <= (0.00001 - 0.0000015) / 0.0000006


def test_response_cache_makes_reruns_free(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch, LLM__CACHE="true")
    a = gw.complete("same prompt", temperature=0)
    b = gw.complete("same prompt", temperature=0)
    c = gw.complete("other prompt", temperature=0)
    assert a.text == b.text and b.cached and not a.cached and not c.cached
    assert len(server.requests) == 2
    totals = gw.ledger.totals("run-1")
    assert totals.calls == 2  # cached answers are recorded but not billed


def test_unknown_model_and_missing_key_are_explained(workspace, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    gw = Gateway(load_settings())
    with pytest.raises(GatewayError, match="unknown model 'gpt-nonsense-xyz'"):
        gw.complete("hi", model="gpt-nonsense-xyz")
    with pytest.raises(GatewayError, match="OPENAI_API_KEY"):
        gw.complete("hi", model="openai/gpt-4o-mini")


def test_unreachable_endpoint_is_explained(workspace, monkeypatch):
    from agentlab.llm.serving import free_port

    monkeypatch.setenv("AGENTLAB_LLM__MAX_RETRIES", "1")
    monkeypatch.setenv("AGENTLAB_LLM__BACKOFF_BASE_S", "0.01")
    monkeypatch.setenv("AGENTLAB_AGENTS__API_BASE", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("AGENTLAB_AGENTS__API_KEY", "x")
    gw = Gateway(load_settings())
    with pytest.raises(GatewayError, match="unreachable"):
        gw.complete("hi", model="openai/whatever")


def test_extract_json():
    assert extract_json('noise {"a": {"b": 1}} tail') == '{"a": {"b": 1}}'
    assert extract_json('```json\n{"a": 1}\n```') == '{"a": 1}'


def test_grammar_schema_turns_bounds_into_enforceable_forms():
    from pydantic import Field

    from agentlab.llm.structured import grammar_schema

    class Review(BaseModel):
        score: int = Field(ge=1, le=10)
        confidence: float = Field(ge=0, le=1)
        tokens: int = Field(ge=0)  # open range: left alone
        note: str

    s = grammar_schema(Review.model_json_schema())["properties"]
    assert s["score"]["enum"] == list(range(1, 11)) and "minimum" not in s["score"]
    assert s["confidence"]["type"] == "string" and "pattern" in s["confidence"]
    assert s["tokens"] == {"minimum": 0, "title": "Tokens", "type": "integer"}
    # what the grammar lets through still validates as the original model
    assert Review.model_validate_json('{"score": 10, "confidence": "0.25", "tokens": 3, "note": ""}').confidence == 0.25


def test_grammar_schema_drops_string_lengths_that_would_crash_llama_cpp():
    # llama.cpp unrolls maxLength into one nested grammar rule per character; a 1500-character field made the
    # embedded server die mid-run (connection refused for every later call)
    from pydantic import Field

    from agentlab.llm.structured import GRAMMAR_MAX_LENGTH, grammar_schema

    class Draft(BaseModel):
        title: str = Field(max_length=200)
        template: str = Field(max_length=1500)

    s = grammar_schema(Draft.model_json_schema())["properties"]
    assert s["title"]["maxLength"] == 200 <= GRAMMAR_MAX_LENGTH and "maxLength" not in s["template"]


def test_grammar_constrained_target_gets_a_one_line_instruction_instead_of_the_schema():
    from agentlab.llm.structured import request_params, with_instruction

    msgs = [{"role": "system", "content": "You judge."}, {"role": "user", "content": "judge this"}]
    local = with_instruction(msgs, Verdict, compact=True)
    assert local[0]["content"] == "You judge.\n\nAnswer with one JSON object with the fields: label, score."
    remote = with_instruction(msgs, Verdict, compact=False)
    assert '"properties"' in remote[0]["content"]  # no grammar: the full schema stays in the prompt
    # the grammar itself still carries the schema
    assert request_params("openai/x", True, Verdict)["response_format"]["schema"]["required"] == ["label", "score"]


def test_structured_output_accepts_raw_control_characters_in_strings(workspace, server, monkeypatch):
    gw = make_gateway(server, monkeypatch)
    server.push(("text", '{"label": "two\nlines\there", "score": 2}'))
    assert gw.structured("judge this", Verdict) == Verdict(label="two\nlines\there", score=2)
    assert len(server.requests) == 1  # no re-ask


def test_a_local_gguf_agents_model_is_served_by_llama_cpp_not_sent_to_litellm(workspace, monkeypatch):
    from agentlab.llm.gateway import context_window
    from agentlab.llm.serving import ServingError

    monkeypatch.setenv("AGENTLAB_AGENTS__MODEL", str(workspace / "missing-model.gguf"))
    settings = load_settings()
    assert context_window(settings, "postdoc") == settings.model_under_study.n_ctx
    with pytest.raises(ServingError, match="GGUF model file not found"):  # not "unknown model" from litellm
        Gateway(settings).target("postdoc")
