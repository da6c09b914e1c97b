"""The outbox: a finished report is written here first and published from here.

If the preprint server is unreachable the entry stays (the report is never lost) and is published
later: by the run itself on resume, by the next lab run, or by ``agentlab lab publish-pending``.
Publishing is idempotent on the server, keyed by the run id, so retrying after a crash between
"server stored it" and "outbox entry removed" never makes a second paper.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Outbox:
    def __init__(self, workspace: Path):
        self.dir = Path(workspace) / "outbox"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def put(self, run_id: str, payload: dict[str, Any], files: dict[str, str] | None = None) -> Path:
        """Store ``payload`` (a PaperCreate-shaped dict) and file paths to attach; atomic."""
        path = self._path(run_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": run_id, "payload": payload, "files": files or {}}, default=str))
        os.replace(tmp, path)
        return path

    def get(self, run_id: str) -> dict[str, Any] | None:
        path = self._path(run_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def pending(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def done(self, run_id: str, result: dict[str, Any]) -> None:
        """Mark as published: the entry moves to ``outbox/sent/`` with the server's answer."""
        sent = self.dir / "sent"
        sent.mkdir(exist_ok=True)
        entry = self.get(run_id) or {}
        (sent / f"{run_id}.json").write_text(json.dumps({**entry, "result": result}, default=str))
        self._path(run_id).unlink(missing_ok=True)

    def flush(self, publish: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict[str, Any] | str]:
        """Publish every pending entry with ``publish(entry) -> {"paper_id", "url"}``; failures stay."""
        out: dict[str, dict[str, Any] | str] = {}
        for run_id in self.pending():
            entry = self.get(run_id)
            if entry is None:
                continue
            try:
                result = publish(entry)
            except Exception as exc:  # unreachable server, rejected paper: keep it for later
                out[run_id] = f"{type(exc).__name__}: {exc}"
                continue
            self.done(run_id, result)
            out[run_id] = result
        return out
