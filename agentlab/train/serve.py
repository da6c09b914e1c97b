"""A trained checkpoint as an OpenAI-compatible endpoint, so the evaluation harness evaluates it like any
other model. ``checkpoint_endpoint`` serves it as its base is served: a checkpoint of a GGUF base by
llama.cpp, from a GGUF at the base's quantization or Q8_0 below 8 bits (``agentlab.train.gguf``), so a
measured gain is the training's and not the engine's; any other by the transformers server of this module (the CPU path; on GPUs
use vLLM with the merged weights or ``--enable-lora``). The served model name carries the checkpoint's
content hash, so a record never passes a trained model off as its base; the endpoint's ``serving`` names
the engine and quantization.

    endpoint, server = checkpoint_endpoint(workspace, run_id, mus=settings.model_under_study)
    ...
    server.__exit__(None, None, None)

Run as ``python -m agentlab.train.serve (--checkpoint DIR | --model REF) --name NAME --port P``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentlab.errors import AgentlabError

TRANSFORMERS_SERVING = "transformers f32"  # what this server runs: the checkpoint's weights as float32


class ServeError(AgentlabError):
    """The checkpoint server did not start."""


def build_app(model: Any, tok: Any, name: str, threads: int | None = None) -> Any:
    import torch
    from fastapi import FastAPI

    if threads:
        torch.set_num_threads(threads)
    app = FastAPI(title=f"agentlab checkpoint server: {name}")
    lock = threading.Lock()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "agentlab"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        enc = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        temp = float(body.get("temperature") or 0.0)
        kw: dict[str, Any] = {"max_new_tokens": int(body.get("max_tokens") or 256), "pad_token_id": tok.pad_token_id}
        if temp > 0:
            kw.update(do_sample=True, temperature=temp, top_p=float(body.get("top_p") or 1.0))
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with lock, torch.no_grad():
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            out = model.generate(**enc, **kw)
        new = out[0][enc["input_ids"].shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        n_in, n_out = int(enc["input_ids"].shape[1]), int(new.shape[0])
        finish = "stop" if n_out and int(new[-1]) == tok.eos_token_id else "length"
        return {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                                            "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}

    return app


@contextlib.contextmanager
def serve_model(*, checkpoint: str | Path | None = None, model: str | None = None, name: str,
                threads: int | None = None, timeout_s: float = 300.0, log_path: Path | None = None) -> Iterator[str]:
    """Start the server in a child process; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    from agentlab.llm.serving import free_port

    if (checkpoint is None) == (model is None):
        raise ServeError("serve one of a checkpoint or a base model")
    port = free_port()
    argv = [sys.executable, "-m", "agentlab.train.serve", "--name", name, "--port", str(port)]
    argv += ["--checkpoint", str(checkpoint)] if checkpoint is not None else ["--model", str(model)]
    if threads:
        argv += ["--threads", str(threads)]
    if log_path is None:
        import tempfile

        log_path = Path(tempfile.mkstemp(prefix="agentlab-ckpt-server-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            _wait_ready(proc, url, timeout_s, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = log_path.read_text(errors="replace")
            last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), "")
            raise ServeError(f"the checkpoint server exited with code {proc.returncode}: {last[:300]} (log: {log_path})")
        try:
            if httpx.get(f"{url}/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServeError(f"the checkpoint server did not answer at {url} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    import uvicorn

    from agentlab.train.models import load_base, load_checkpoint

    model, tok = load_checkpoint(a.checkpoint) if a.checkpoint else load_base(a.model)
    model.eval()
    uvicorn.run(build_app(model, tok, a.name, a.threads), host="127.0.0.1", port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def checkpoint_endpoint(workspace: Path, ref: str, threads: int | None = None,
                        mus: Any = None) -> tuple[Any, Any]:
    """(Endpoint, started server context to exit afterwards) for a training run's checkpoint, served as its
    base is: when the base is a GGUF, by llama.cpp from the checkpoint's GGUF (the base's quantization, Q8_0
    below 8 bits: ``agentlab.train.gguf``, converted once), sized like the model under study (``mus``:
    ``Settings.model_under_study``); else by transformers with ``threads`` torch threads. The endpoint's
    ``serving`` names the engine and quantization, which the records keep."""
    from agentlab.eval.client import Endpoint
    from agentlab.train.gguf import base_gguf, checkpoint_gguf
    from agentlab.train.runs import RunStore, TrainRunError

    run = RunStore(workspace).get(ref)
    if not run.checkpoint or not Path(run.checkpoint).is_dir():
        raise TrainRunError(f"training run {run.run_id} has no checkpoint (status {run.status})")
    name = f"ckpt:{run.name}@{run.short_hash}"
    if base_gguf(run.checkpoint) is not None:
        gguf = checkpoint_gguf(run.checkpoint, run.checkpoint_hash)
        managed, url, serving = _llama_cpp_server(Path(workspace), gguf, mus)
    else:
        managed = serve_model(checkpoint=run.checkpoint, name=name, threads=threads)
        url, serving = managed.__enter__(), TRANSFORMERS_SERVING
    identity = f"checkpoint:{run.checkpoint_hash[:16]}"  # type: ignore[index]
    return Endpoint.openai(url, name, identity=identity, serving=serving), managed


def _llama_cpp_server(workspace: Path, gguf: Path, mus: Any) -> tuple[Any, str, str]:
    """(started server context, base URL, serving label) of llama.cpp serving ``gguf`` (or one running)."""
    from agentlab.llm.gguf_file import serving_label
    from agentlab.llm.serving import ServerSpec, ServingManager, managed_server

    spec = ServerSpec.local(str(gguf), mus) if mus is not None else ServerSpec(model=str(gguf))
    managed = managed_server(ServingManager(workspace), spec, reuse=True, timeout_s=600)
    server = managed.__enter__()
    return managed, server.url, serving_label(server.engine, server.model)
