"""Catching the index up with SQLite once a lost standalone Chroma server answers again.

The papers table is the truth; the index is derived from it (crud.reconcile_index). While the Chroma
server is away, search and publishing answer 503 and nothing new is written anywhere (a publish is all
or nothing), so nothing is lost. This thread tries the server every `chroma_retry_s` while it is lost;
once it answers, search and publishing open again and every paper the collection misses is embedded and
added (all of them when the server came back empty; none when it kept its data), and entries of papers
that are not in SQLite are dropped.
"""

from __future__ import annotations

import logging
import threading

from preprint_server import crud
from preprint_server.db import Database
from preprint_server.errors import Unavailable
from preprint_server.search import SearchIndex

log = logging.getLogger("preprint_server")


class IndexCatchUp:
    def __init__(self, db: Database, index: SearchIndex, interval_s: float):
        self.db, self.index, self.interval_s = db, index, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-catch-up", daemon=True)
        self.caught_up = 0  # papers added to the index by catch-ups so far

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.index.lost and self.index.vectors.reconnect():
                self._catch_up()

    def _catch_up(self) -> None:
        try:
            added, removed = crud.reconcile_index(self.db, self.index)
        except Unavailable:  # lost again midway: the next reconnect starts over
            return
        except Exception:  # never let the thread die: the next loss tries again
            log.exception("catching the index up after Chroma came back failed")
            return
        self.caught_up += added
        log.info("Chroma is back: %d papers re-added to the index, %d orphans removed", added, removed)
