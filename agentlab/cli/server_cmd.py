"""`agentlab server`: run the preprint server, rebuild its index, manage lab API keys."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.table import Table

from agentlab.cli.common import console, get_settings
from agentlab.errors import AgentlabError

app = typer.Typer(help="The shared preprint server (FastAPI + SQLite + Chroma).", no_args_is_help=True)
keys_app = typer.Typer(help="Lab API keys (works on the data dir, also while the server runs).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DATA_DIR_HELP = "Server data folder: SQLite, files, Chroma and keyword indexes [env AGENTLAB_SERVER_DATA_DIR; default <workspace>/server]."


def _data_dir(value: Path | None) -> Path:
    return (value or get_settings().workspace / "server").expanduser()


def _db(data_dir: Path | None):
    from preprint_server.core.config import ServerSettings
    from preprint_server.db import Database

    settings = ServerSettings(data_dir=_data_dir(data_dir))
    if not settings.db_path.exists():
        raise AgentlabError(f"no preprint server data in {settings.data_dir} (start the server once, or pass --data-dir)")
    return Database(settings.db_path)


DataDirOpt = typer.Option(None, "--data-dir", envvar="AGENTLAB_SERVER_DATA_DIR", help=DATA_DIR_HELP)
ChromaOpt = typer.Option(None, "--chroma-url", help="Use a standalone Chroma server (http://host:port) instead of files.")


@app.command("start")
def start(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    data_dir: Path | None = DataDirOpt,
    chroma_url: str | None = ChromaOpt,
    private: bool = typer.Option(False, "--private", help="Reads need a lab key too."),
    max_upload_mb: float = typer.Option(50, "--max-upload-mb", min=0.001, help="Largest request body."),
) -> None:
    """Serve the API, OpenAPI docs (/docs) and web pages until Ctrl-C."""
    import uvicorn

    from preprint_server.app import create_app
    from preprint_server.core.config import ServerSettings

    settings = ServerSettings(data_dir=_data_dir(data_dir), chroma_url=chroma_url, private=private,
                              max_upload_bytes=int(max_upload_mb * 2**20))
    with console.status("loading the embedding model and index..."):
        app_ = create_app(settings)
    console.print(f"preprint server: http://{host}:{port} (data {settings.data_dir}; docs /docs)")
    logging.getLogger("preprint_server").setLevel(logging.INFO)
    try:
        uvicorn.run(app_, host=host, port=port, log_level="info")
    except OSError as exc:
        raise AgentlabError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@app.command("reindex")
def reindex(data_dir: Path | None = DataDirOpt, chroma_url: str | None = ChromaOpt) -> None:
    """Rebuild the search index (Chroma + keywords) from the papers in SQLite.

    With the on-disk index, stop the server first (Chroma files serve one process); a running
    server also reconciles missing papers at its next start. Index files that cannot be read
    (corrupt) are removed and rebuilt."""
    from rich.progress import Progress

    from preprint_server import crud
    from preprint_server.core.config import ServerSettings
    from preprint_server.errors import ServiceError
    from preprint_server.search import KeywordIndexBusy, SearchIndex

    settings = ServerSettings(data_dir=_data_dir(data_dir), chroma_url=chroma_url)
    db = _db(data_dir)
    try:
        with console.status("loading the embedding model..."):
            index = SearchIndex(settings, discard_unreadable=True)
        with Progress(console=console) as progress:
            task = progress.add_task("reindexing", total=None)
            n = crud.rebuild_index(db, index, progress=lambda done, total: progress.update(task, completed=done, total=total))
    except KeywordIndexBusy as exc:
        raise AgentlabError(f"{exc}; is the server running? Stop it first.") from None
    except ServiceError as exc:  # a standalone Chroma that does not answer
        raise AgentlabError(f"reindex: {exc}") from None
    console.print(f"reindexed {n} papers")


@keys_app.command("create")
def keys_create(lab: str = typer.Argument(..., help="Lab name (letters, digits, - and _)."),
                data_dir: Path | None = DataDirOpt) -> None:
    """Create a key for LAB (and the lab if new). The key is printed once; only its hash is stored."""
    from preprint_server import crud
    from preprint_server.core.config import ServerSettings
    from preprint_server.db import Database
    from preprint_server.errors import ServiceError

    settings = ServerSettings(data_dir=_data_dir(data_dir))
    try:
        key = crud.create_key(Database(settings.db_path), lab)
    except ServiceError as exc:
        raise AgentlabError(exc.message) from None
    console.print(f"API key for lab {lab} (shown once; store it as server.api_key):")
    console.print(key, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(data_dir: Path | None = DataDirOpt) -> None:
    """Labs and their keys (prefixes only)."""
    from preprint_server import crud

    table = Table("lab", "key prefix", "created", "revoked")
    for k in crud.list_keys(_db(data_dir)):
        table.add_row(k.lab.name, k.prefix + "…", k.created.strftime("%Y-%m-%d %H:%M"), "yes" if k.revoked else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(lab_or_key: str = typer.Argument(..., help="A lab name (all its keys) or a key / key prefix."),
                data_dir: Path | None = DataDirOpt) -> None:
    """Revoke keys; requests with them get 403 at once."""
    from preprint_server import crud

    n = crud.revoke_keys(_db(data_dir), lab_or_key)
    if n == 0:
        raise AgentlabError(f"no active key matches {lab_or_key!r} (see `agentlab server keys list`)")
    console.print(f"revoked {n} key(s)")
