"""A trained checkpoint is served as its base is (DESIGN.md, decision 8): a checkpoint of a GGUF base becomes
a GGUF (llama.cpp's own converter; Q8_0 for a base below 8 bits, whose grid would round the training away)
and is served by llama.cpp's server, and the records of both name their engine and quantization. What has no
GGUF base stays on the transformers server."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from agentlab.bench.registry import load_benchmark
from agentlab.eval.harness import run_evaluation
from agentlab.llm.gguf_file import GgufError, file_type, quantization, serving_label, tensor_types
from agentlab.techniques import get_technique
from agentlab.train.gguf import GgufConversionError, NoBaseGguf, base_gguf, checkpoint_gguf
from agentlab.train.models import META_FILE
from agentlab.train.outputs import content_hash
from agentlab.train.runs import RunStore, TrainRun
from agentlab.train.serve import TRANSFORMERS_SERVING, checkpoint_endpoint
from tests.conftest import SHARED_DATA

needs_embedded = pytest.mark.requires("embedded-gguf")


def register_run(ws: Path, checkpoint: Path, base: str) -> TrainRun:
    """A finished training run in the workspace's RunStore, owning ``checkpoint``."""
    store = RunStore(ws)
    run = TrainRun(run_id=store.new_id(), name="tiny", method="sft", finetune="lora", model=base, recipe={},
                   recipe_hash="0" * 12, max_steps=1, status="succeeded", checkpoint=str(checkpoint),
                   checkpoint_hash=content_hash(checkpoint))
    store.save(run)
    return run


def write_meta(checkpoint: Path, base: str) -> Path:
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / META_FILE).write_text(json.dumps({"base": base, "method": "sft", "finetune": "lora"}))
    return checkpoint


def tiny_lora_checkpoint(folder: Path, base: Path) -> Path:
    """A LoRA checkpoint of ``base`` as a training run saves it, with random (non-zero) adapter weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from agentlab.train.models import load_base

    model, tok = load_base(str(base))
    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, weights in lora.named_parameters():
            if "lora_B" in name:  # B starts at zero: the merged model would equal its base
                weights.normal_(0, 0.02)
    lora.save_pretrained(folder)
    tok.save_pretrained(folder)
    return write_meta(folder, str(base))


def v_proj_weights(checkpoint: Path, gguf: Path, base: Path) -> tuple:
    """Layer 0's attention value weights, flat: merged in transformers, as ``gguf`` serves them, as ``base``
    has them (v is written as it is; llama.cpp's converter permutes q and k)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from agentlab.train.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    trained = merged.model.layers[0].self_attn.v_proj.weight.detach().float().numpy().ravel()

    def from_gguf(path: Path):
        [t] = [t for t in GGUFReader(str(path)).tensors if t.name == "blk.0.attn_v.weight"]
        return dequantize(t.data, t.tensor_type).ravel()

    return trained, from_gguf(gguf), from_gguf(base)


def _norm(v) -> float:
    return float((v ** 2).sum() ** 0.5)


def test_a_checkpoint_without_a_gguf_base_stays_on_transformers(workspace, monkeypatch):
    ck = write_meta(workspace / "train" / "x" / "checkpoint", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert base_gguf(ck) is None
    with pytest.raises(NoBaseGguf, match="serve it with transformers"):
        checkpoint_gguf(ck)
    started = []

    @contextlib.contextmanager
    def transformers_server(**kw):  # TEST DOUBLE for the transformers server: records what it was asked
        started.append(kw)
        yield "http://127.0.0.1:9/v1"

    monkeypatch.setattr("agentlab.train.serve.serve_model", transformers_server)
    run = register_run(workspace, ck, "HuggingFaceTB/SmolLM2-135M-Instruct")
    endpoint, server = checkpoint_endpoint(workspace, run.run_id, threads=2)
    server.__exit__(None, None, None)
    assert started and started[0]["checkpoint"] == str(ck)
    assert endpoint.serving == TRANSFORMERS_SERVING
    assert endpoint.identity == f"checkpoint:{run.checkpoint_hash[:16]}"


def test_a_gone_base_gguf_is_named(workspace):
    ck = write_meta(workspace / "ck", str(workspace / "models" / "gone.gguf"))
    with pytest.raises(GgufConversionError, match="gone.gguf is gone"):
        base_gguf(ck)


@needs_embedded
def test_the_embedded_models_quantization_and_serving_label(tmp_path):
    from agentlab.llm.serving import embedded_model_path

    path = embedded_model_path()
    assert file_type(path) == 3 and quantization(path) == "Q4_1"
    (tmp_path / "x.gguf").write_bytes(b"not a GGUF file at all, but long enough")
    with pytest.raises(GgufError, match="not a readable GGUF"):
        file_type(tmp_path / "x.gguf")
    assert serving_label("llama.cpp", str(path)) == "llama.cpp Q4_1"
    assert serving_label("vllm", "Qwen/Qwen2.5-0.5B") == "vllm" and serving_label("external", "x") == ""


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1200)
@pytest.mark.requires("llama.cpp", "embedded-gguf", "train")
def test_a_trained_checkpoint_and_its_base_are_served_by_the_same_engine(workspace):
    from agentlab.eval.client import Endpoint
    from agentlab.llm.serving import ServerSpec, ServingManager, embedded_model_path, managed_server

    base = embedded_model_path()
    checkpoint = tiny_lora_checkpoint(workspace / "train" / "tiny" / "checkpoint", base)
    run = register_run(workspace, checkpoint, str(base))
    problems = load_benchmark("basic_arithmetic", SHARED_DATA, limit=2)
    spec = get_technique("direct", max_tokens=16, temperature=0.0)

    def evaluate(endpoint):
        return run_evaluation(spec, problems, endpoint, benchmark="basic_arithmetic",
                              db_path=workspace / "eval.db", concurrency=2, timeout_s=120)

    with managed_server(ServingManager(workspace), ServerSpec(), reuse=False, timeout_s=300) as server:
        base_record = evaluate(Endpoint.from_server(server))
    endpoint, trained_server = checkpoint_endpoint(workspace, run.run_id)
    try:
        trained_record = evaluate(endpoint)
        [served] = [s for s in ServingManager(workspace).list() if s.url == endpoint.base_url]
    finally:
        trained_server.__exit__(None, None, None)

    gguf = checkpoint_gguf(run.checkpoint, run.checkpoint_hash)  # the cached file: converted once
    assert gguf.parent == checkpoint.parent / "gguf" and gguf.name.startswith(run.checkpoint_hash[:16])
    assert file_type(base) == 3 and file_type(gguf) == 7  # a Q4_1 base: its checkpoint is served at Q8_0
    assert served.engine == "llama.cpp" and served.model == str(gguf)
    assert base_record.serving == "llama.cpp Q4_1" and trained_record.serving == "llama.cpp Q8_0"
    # the served weights are the trained ones: at Q4_1 the merged weights round back onto the base's grid
    trained, served_w, base_w = v_proj_weights(checkpoint, gguf, base)
    assert _norm(served_w - trained) < 0.25 * _norm(trained - base_w)
    assert trained_record.model == f"ckpt:{run.name}@{run.short_hash}" and trained_record.n == 2
    assert endpoint.identity == f"checkpoint:{run.checkpoint_hash[:16]}"
    assert trained_record.calls == 2 and trained_record.cached_calls == 0  # answered by its own server
