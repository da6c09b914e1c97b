"""A local preprint server for a lab run when none is configured (``server.url`` empty).

The server runs in the lab's process (uvicorn on a loopback port) on ``<workspace>/preprint``; the
lab's API key is created once and kept in ``<workspace>/preprint/lab-keys/<lab>.key`` (mode 0600), so
a resumed run publishes to the same data with the same key (and the idempotency key still holds).
Browse it afterwards with ``agentlab server start --data-dir <workspace>/preprint``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path


def local_data_dir(workspace: Path) -> Path:
    return Path(workspace) / "preprint"


def lab_key(data_dir: Path, lab: str) -> str:
    from preprint_server import crud
    from preprint_server.core.config import ServerSettings
    from preprint_server.db import Database

    safe = re.sub(r"[^A-Za-z0-9_-]", "_", lab)[:60] or "lab"
    path = Path(data_dir) / "lab-keys" / f"{safe}.key"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = ServerSettings(data_dir=Path(data_dir))
    db = Database(cfg.db_path)
    try:
        key = crud.create_key(db, lab)
    finally:
        db.engine.dispose()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def start_for_lab(workspace: Path, lab: str, embedder=None) -> tuple[str, str, Callable[[], None], Path]:
    """(url, api key, stop, data dir) of a local server started for this run."""
    from preprint_server.serve import start_local_server

    data_dir = local_data_dir(workspace)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = lab_key(data_dir, lab)
    url, stop = start_local_server(data_dir, embedder=embedder)
    return url, key, stop, data_dir
