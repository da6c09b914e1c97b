"""Evaluation from the terminal, shared by `eval run` and `papers replicate`: the model under study's endpoint
(a URL, a litellm model or a llama.cpp server started for the run) and a run of the harness with a progress bar."""

from __future__ import annotations

from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agentlab.cli.common import console


def choose_endpoint(settings, model_url, model_name, api_key, litellm_model, serve, model):
    """The model under study: (endpoint, the managed server to stop afterwards or None)."""
    from agentlab.eval.client import Endpoint

    if sum(x is not None for x in (model_url, litellm_model, serve)) > 1:
        raise typer.BadParameter("give one of --model-url, --litellm or --serve")
    if litellm_model:
        return Endpoint.from_litellm(litellm_model, api_key=api_key), None
    if model_url:
        return _url_endpoint(model_url, model_name, api_key), None
    engine = serve or "llama.cpp"
    if engine != "llama.cpp":
        raise typer.BadParameter("only llama.cpp can be started here; run vLLM with `agentlab models serve` and use "
                                 "--model-url", param_hint="--serve")
    from agentlab.llm.serving import ServerSpec, ServingManager, managed_server

    managed = managed_server(ServingManager(settings.workspace),
                             ServerSpec.local(model, settings.model_under_study),
                             reuse=True, timeout_s=600)
    with console.status("starting llama.cpp..."):
        server = managed.__enter__()
    return Endpoint.from_server(server), managed


def _url_endpoint(url: str, name: Optional[str], api_key: Optional[str]):
    import httpx

    from agentlab.eval.client import Endpoint
    from agentlab.eval.errors import EvalError

    ep = Endpoint.openai(url, name or "default", api_key)
    if name:
        return ep
    try:
        r = httpx.get(f"{ep.base_url}/models", timeout=5.0,
                      headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        models = [m.get("id") for m in r.json().get("data", [])] if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        raise EvalError(f"endpoint {ep.base_url} is not reachable: start the server or fix --model-url") from None
    if not models:
        raise EvalError(f"{ep.base_url}/models lists no model: pass --model-name")
    return Endpoint.openai(url, models[0], api_key)


def run_with_progress(spec, problems, endpoint, benchmark, subset, settings, concurrency, timeout, cache, job_id):
    """The harness on ``problems`` with a progress bar (done, accuracy so far, time left); the summary record."""
    import asyncio

    from agentlab.eval.harness import evaluate
    from agentlab.eval.records import default_db_path
    from agentlab.llm.transport import RetryPolicy

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(f"{spec.name} on {benchmark}", total=len(problems), acc="-")

        def on_result(res, done, correct, total):
            progress.update(task, completed=done, acc=f"{correct}/{done} = {correct / done:.1%}")

        return asyncio.run(evaluate(
            spec, problems, endpoint, db_path=default_db_path(settings), benchmark=benchmark, subset=subset,
            concurrency=concurrency, timeout_s=timeout or settings.llm.timeout_s,
            retry=RetryPolicy.from_settings(settings.llm), cache=cache, job_id=job_id, on_result=on_result))
