"""Integration: the real llama.cpp server with the embedded SmolLM2-135M, through litellm and the gateway."""

import json
import os
import re
import socket
import subprocess
import sys

import litellm
import pytest
from pydantic import BaseModel, Field

from agentlab.config import load_settings
from agentlab.llm.gateway import Gateway
from agentlab.llm.serving import ServerSpec, ServingError, ServingManager, embedded_model_path
from agentlab.llm.structured import request_params
from agentlab.procs import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class Arithmetic(BaseModel):
    reasoning: str
    answer: int


class Review(BaseModel):
    summary: str
    score: int = Field(ge=1, le=10)
    confidence: float = Field(ge=0, le=1)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    mgr = ServingManager(tmp_path_factory.mktemp("serving"))
    server = mgr.start(ServerSpec(engine="llama.cpp"), timeout_s=300)
    yield mgr, server
    mgr.stop(server)


def test_embedded_model_ships_in_the_wheel():
    path = embedded_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_completion_through_litellm(embedded):
    _, server = embedded
    resp = litellm.completion(model=server.litellm_model, api_base=server.url, api_key="x",
                              messages=[{"role": "user", "content": "What is 2+3?"}], max_tokens=32, temperature=0)
    assert resp.choices[0].message.content.strip()
    assert resp.usage.completion_tokens > 0


def test_structured_object_through_the_gateway(embedded, workspace, monkeypatch):
    mgr, server = embedded
    monkeypatch.setenv("AGENTLAB_AGENTS__MODEL", server.litellm_model)
    monkeypatch.setenv("AGENTLAB_AGENTS__API_BASE", server.url)
    monkeypatch.setenv("AGENTLAB_AGENTS__API_KEY", "sk-local")
    gw = Gateway(load_settings(), run_id="integration")
    # grammar-constrained decoding is what makes a 135M model reliable: ask for it like the embedded path does
    gw.structured("What is 7 + 8?", Arithmetic, max_tokens=96, temperature=0,
                  response_format={"type": "json_object", "schema": Arithmetic.model_json_schema()})
    # one request to the server's model, answered validly the first time (the grammar): no re-ask
    calls = gw.ledger.summary(run_id="integration")
    assert [(c["key"], c["calls"], c["errors"]) for c in calls] == [(server.litellm_model, 1, 0)]
    assert gw.ledger.totals("integration").tokens > 0


def test_embedded_default_gateway_starts_and_stops_its_server(workspace):
    settings = load_settings()
    prompt = "Review this paper: 'CoT helps small models'."
    with Gateway(settings, run_id="embedded") as gw:
        gw.structured("What is 2+3?", Arithmetic, max_tokens=96, temperature=0)
        gw.structured(prompt, Review, max_tokens=256, temperature=0)
        # the bounds pydantic checks travel in the grammar (grammar_schema): llama.cpp's raw reply
        # already respects them, so no structured call needed a re-ask
        model = gw.target().model
        raw = gw.complete(prompt, max_tokens=256, temperature=0, **request_params(model, True, Review)).text
        fields = json.loads(raw, strict=False)
        assert type(fields["score"]) is int and 1 <= fields["score"] <= 10, raw
        confidence = fields["confidence"]  # a decimal string: the grammar's form of a number in [0, 1]
        assert isinstance(confidence, str) and re.fullmatch(r"0(\.[0-9]{1,4})?|1(\.0{1,4})?", confidence), raw
        assert gw.ledger.totals("embedded").calls == 3
        assert "smollm2" in model
        pid = gw._local[None].server.pid
        assert pid_alive(pid)
    assert not pid_alive(pid)
    assert ServingManager(settings.workspace).list() == []


def test_port_clash_is_reported(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServingError, match=f"port {port} .* already in use"):
            ServingManager(tmp_path).start(ServerSpec(engine="llama.cpp", port=port))


def test_a_server_that_crashes_is_reported_with_its_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all" * 100)
    mgr = ServingManager(tmp_path)
    with pytest.raises(ServingError, match="exited with code"):
        mgr.start(ServerSpec(engine="llama.cpp", model=str(bad)), timeout_s=120)
    assert mgr.list() == []


def test_missing_model_file_is_reported(tmp_path):
    with pytest.raises(ServingError, match="not found"):
        ServingManager(tmp_path).start(ServerSpec(engine="llama.cpp", model=str(tmp_path / "nope.gguf")))


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "agentlab", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def test_cli_chat_answers_offline_with_the_embedded_model(workspace):
    proc = _cli("chat", "What is 2+3?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "smollm2" in proc.stderr
    usage = _cli("usage")
    assert usage.returncode == 0 and "smollm2" in usage.stdout


def test_cli_models_serve_list_stop(workspace):
    started = _cli("models", "serve", "--detach")
    assert started.returncode == 0, started.stderr
    listed = _cli("models", "list")
    assert "llama.cpp" in listed.stdout and "smollm2" in listed.stdout
    stopped = _cli("models", "stop", "all")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert "no model servers running" in _cli("models", "list").stdout


def test_cli_errors_are_one_line_without_traceback(workspace):
    proc = _cli("chat", "hi", "--model", "not-a-provider-model-xyz")
    assert proc.returncode == 1
    assert "unknown model" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("models", "serve", "--model", "/nonexistent/model.gguf", "--detach")
    assert proc.returncode == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_a_server_does_not_outlive_its_owner_killed_with_sigkill(tmp_path):
    import select
    import signal
    import time

    owner = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from agentlab.llm.serving import ServerSpec, ServingManager\n"
        f"s = ServingManager({str(tmp_path)!r}).start(ServerSpec(engine='llama.cpp'))\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n"
    )], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([owner.stdout], [], [], 300)  # bounded: a stuck start fails, not hangs
        assert ready, "the owner did not report its server within 300 s"
        pid = int(owner.stdout.readline())
        assert pid_alive(pid)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(60)
    deadline = time.monotonic() + 120  # generous: returns as soon as the server is gone
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(pid)
    record = next(tmp_path.glob("servers/*.json"))
    assert not pid_alive(json.loads(record.read_text())["pid"])
    assert ServingManager(tmp_path).list() == []  # the dead record is dropped
