"""The Chroma side of the index: files in the data directory, or a standalone Chroma server
(`chroma_url`, `agentlab server start --chroma-url`) that many preprint servers may share.

A standalone server can go away and come back, with its data or without it (a fresh volume). While it
is away, every use of the collection raises `Unavailable` (a 503 for the client, with a message that
says so) instead of a connection error's stack trace, and the store is marked lost; `reconnect` opens
the collection again once the server answers (the app's catch-up thread calls it, then adds what the
collection misses from SQLite: `preprint_server/catchup.py`). Files on disk are never lost this way:
their errors are raised as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from preprint_server.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
COLLECTION = "papers"
INTERNAL_RETRY_S = (0.05, 0.2, 0.5)  # pauses before trying a call again after a Chroma internal error
# A hung Chroma server must not hold every search thread forever (chromadb's client waits without end).
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


def _lost_errors() -> tuple[type[BaseException], ...]:
    """What a standalone Chroma server's absence looks like: no connection, no answer, or (back
    without its data) a collection that no longer exists."""
    import httpx
    from chromadb.errors import NotFoundError

    return httpx.TransportError, NotFoundError


class VectorStore:
    """The Chroma collection of chunk embeddings; `collection_config` is what it is created with."""

    def __init__(self, url: str | None, open_local: Callable[[], Any], collection_config: dict[str, Any]):
        self.url = url
        self._config = collection_config
        self._lock = threading.Lock()
        self.lost_since: float | None = None  # monotonic time the remote server was found gone
        self.client: Any = None
        self._collection: Any = None
        if url is None:
            self.client = open_local()
            self._collection = self._open(self.client)
        elif not self.reconnect():
            log.warning("Chroma at %s does not answer: search and publishing answer 503 until it does", url)

    # -- state ---------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    def unavailable(self) -> Unavailable:
        return Unavailable(f"the search index's vector store (Chroma at {self.url}) is unreachable; papers "
                           "already published are safe, and search and publishing resume once it is back: "
                           "retry shortly")

    @property
    def collection(self) -> Any:
        return self._collection

    def check(self) -> None:
        """Raise `Unavailable` while the remote server is lost."""
        if self.lost:
            raise self.unavailable()

    def _mark_lost(self, exc: BaseException) -> None:
        with self._lock:
            if self.lost_since is None:
                self.lost_since = time.monotonic()
                log.warning("Chroma at %s lost (%s: %s)", self.url, type(exc).__name__, str(exc)[:200])

    # -- use -----------------------------------------------------------------------------------
    def run(self, call: Callable[[Any], T]) -> T:
        """`call(collection)`, which must be safe to repeat (reads, upserts, deletes). A lost remote
        server raises `Unavailable`. Chroma's internal errors are tried again a few times: a query
        that meets the collection's first flush can fail ("Error creating hnsw segment reader:
        Nothing found on disk", seen with chroma 1.5 on a busy machine) and works a moment later."""
        from chromadb.errors import InternalError

        self.check()
        for pause in (*INTERNAL_RETRY_S, None):
            try:
                return call(self._collection)
            except _lost_errors() as exc:
                if self.url is None:
                    raise
                self._mark_lost(exc)
                raise self.unavailable() from None
            except InternalError as exc:
                if pause is None:
                    if self.url is None:
                        raise
                    raise Unavailable(f"Chroma at {self.url} failed: {str(exc)[:300]}; retry shortly") from None
                log.info("Chroma internal error, trying again in %.2f s: %s", pause, str(exc)[:200])
                time.sleep(pause)
        raise AssertionError("unreachable")

    def max_batch_size(self) -> int:
        return self.run(lambda _: self.client.get_max_batch_size())

    def reset(self) -> None:
        """Drop the collection and create it empty."""
        self.run(lambda _: self.client.delete_collection(COLLECTION))
        self._collection = self._open(self.client)

    # -- (re)connecting ------------------------------------------------------------------------
    def _open(self, client: Any) -> Any:
        # embedding_function=None: Chroma's default would download a model; we embed ourselves.
        return client.get_or_create_collection(COLLECTION, embedding_function=None, **self._config)

    def reconnect(self) -> bool:
        """Open the remote collection again (creating it when the server came back empty); True when
        the server answered. Clears the lost mark."""
        import chromadb

        u = urlparse(self.url)
        try:
            client = chromadb.HttpClient(host=u.hostname or "127.0.0.1", port=u.port or 8000,
                                         ssl=u.scheme == "https")
            _set_timeouts(client)
            collection = self._open(client)
        except (ValueError, *_lost_errors()) as exc:  # ValueError: chromadb's "Could not connect"
            self._mark_lost(exc)
            return False
        with self._lock:
            self.client, self._collection = client, collection
            if self.lost_since is not None:
                log.warning("Chroma at %s is back after %.0f s", self.url, time.monotonic() - self.lost_since)
            self.lost_since = None
        return True


def _set_timeouts(client: Any) -> None:
    """Bound each request to the Chroma server. chromadb's HTTP client (`client._server._session`, an
    httpx.Client) has no setting for it; when a version moves it, requests keep chromadb's default."""
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    else:
        log.debug("chromadb's HTTP session not found: Chroma requests have no timeout")
