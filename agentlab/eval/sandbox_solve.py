"""Runs INSIDE the sandbox: the driver of a ``code`` technique's job (shipped as the job's code by
``agentlab.eval.code_technique``). It calls the agent-written ``solve(problem, client)`` from
``technique.py`` on every problem of ``problems.json`` (no gold answers there) and writes the texts to
``$AGENTLAB_RESULT``; ``client`` reaches the model under study only through the metered proxy
(``agentlab_client``, bound in by the sandbox). Standard library only: nothing of agentlab is importable here.
"""

import json
import os
import traceback

import agentlab_client


class Client:
    """What solve(problem, client) gets: the model under study through the metered proxy."""

    def chat(self, messages, **params):
        return agentlab_client.chat(messages, **params)

    def complete(self, prompt, **params):
        return agentlab_client.complete(prompt, **params)


def solve_one(solve, problem: dict) -> dict:
    """{"text": ...} or {"error": ...}: one problem's failure never stops the others."""
    try:
        return {"text": str(solve(dict(problem), Client()))[:20000]}
    except agentlab_client.BudgetExhausted as exc:
        return {"error": "budget exhausted: " + str(exc)[:300]}
    except Exception:
        traceback.print_exc()
        return {"error": traceback.format_exc(limit=4)[-1500:]}


def main() -> None:
    with open("problems.json") as fh:
        problems = json.load(fh)
    ns = {"__name__": "technique"}
    with open("technique.py") as fh:
        exec(compile(fh.read(), "technique.py", "exec"), ns)
    out = {}
    for i, p in enumerate(problems):
        out[p["id"]] = solve_one(ns["solve"], p)
        print("progress", i + 1, 0, len(problems), flush=True)
    with open(os.environ["AGENTLAB_RESULT"], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
