"""The usage ledger: one row per agent LLM call, persisted to SQLite, and the reservations that keep
concurrent calls within a run's budgets.

Every gateway call records model, role, tokens, cost, latency and the lab/run it belongs to.
Budgets are enforced from these rows, so a resumed run keeps counting what it already spent.
Before a call goes out it reserves its worst case (prompt estimate + max_tokens, and what that costs)
under one lock (``Reservations``); when it returns it settles: its ledger row is written and its
reservation dropped in the same step. Calls in flight therefore never spend the same remainder twice.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agentlab.llm.errors import BudgetExceeded
from agentlab.sqlite import SqliteStore

MIN_COMPLETION_TOKENS = 1  # a call is refused when not even this many completion tokens fit
DEFAULT_MAX_COMPLETION = 4096  # the completion limit of a call that names none, for models litellm does not know

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    role TEXT,
    lab TEXT,
    run_id TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    ok INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    structured TEXT,
    reask INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS llm_calls_run ON llm_calls(run_id);
"""


@dataclass
class CallRecord:
    model: str
    role: str | None = None
    lab: str | None = None
    run_id: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    ok: bool = True
    error: str | None = None
    structured: str | None = None  # how a structured answer was enforced (agentlab.llm.structured.enforcement)
    reask: bool = False  # a structured call repeated after an invalid answer
    fallback: bool = False  # not a call: an agent used a safe default instead of the model's answer


@dataclass(frozen=True)
class CallTags:
    """What a call's ledger row says beyond its usage: the structured-output enforcement and re-asks."""

    structured: str | None = None
    reask: bool = False


@dataclass
class Totals:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class UsageLedger(SqliteStore):
    schema = _SCHEMA
    added_columns = {"llm_calls": {"structured": "TEXT", "reask": "INTEGER NOT NULL DEFAULT 0",
                                   "fallback": "INTEGER NOT NULL DEFAULT 0"}}

    def record(self, rec: CallRecord) -> None:
        self.execute(
            "INSERT INTO llm_calls (ts, model, role, lab, run_id, tokens_in, tokens_out, cost_usd,"
            " latency_s, cached, ok, error, structured, reask, fallback) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (time.time(), rec.model, rec.role, rec.lab, rec.run_id, rec.tokens_in, rec.tokens_out,
             rec.cost_usd, rec.latency_s, int(rec.cached), int(rec.ok), rec.error, rec.structured,
             int(rec.reask), int(rec.fallback)),
        )

    def totals(self, run_id: str | None = None) -> Totals:
        """Spend of one run (or of everything), cached answers excluded: they cost nothing."""
        sql = "SELECT COUNT(*) AS calls, COALESCE(SUM(tokens_in),0) AS tin, COALESCE(SUM(tokens_out),0) AS tout," \
              " COALESCE(SUM(cost_usd),0) AS usd FROM llm_calls WHERE cached = 0 AND fallback = 0"
        args: tuple = ()
        if run_id is not None:
            sql += " AND run_id = ?"
            args = (run_id,)
        row = self.one(sql, args) or {}
        return Totals(calls=row["calls"], tokens_in=row["tin"], tokens_out=row["tout"], cost_usd=row["usd"])

    def summary(self, group_by: str = "model", run_id: str | None = None, since: float | None = None) -> list[dict]:
        """Rows grouped by model, role, lab or run_id, with calls, tokens, cost and latency."""
        if group_by not in {"model", "role", "lab", "run_id"}:
            raise ValueError(f"cannot group by {group_by!r}: use model, role, lab or run_id")
        where, args = ["1=1"], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = (
            f"SELECT COALESCE({group_by}, '-') AS key, SUM(1 - fallback) AS calls, SUM(cached) AS cached,"
            " SUM(1 - ok) AS errors, SUM(structured = 'grammar') AS grammar, SUM(reask) AS reasks,"
            " SUM(fallback) AS fallbacks, SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out,"
            " SUM(cost_usd) AS cost_usd, AVG(CASE WHEN fallback = 0 THEN latency_s END) AS mean_latency_s"
            f" FROM llm_calls WHERE {' AND '.join(where)} GROUP BY key ORDER BY cost_usd DESC, calls DESC"
        )
        return self.all(sql, args)


# -- reservations --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """A run's budgets (``Settings.budgets``); None = unlimited."""

    max_usd: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class CallNeed:
    """What one call may use at most, before it is sent."""

    prompt_tokens: int  # an estimate on the high side
    asked: int | None = None  # the call's own max_tokens
    model_max: int | None = None  # the model's largest completion (litellm's model map); None = unknown
    usd_in: float = 0.0  # USD per prompt token (0: a model litellm does not price)
    usd_out: float = 0.0  # USD per completion token

    def usd(self, completion_tokens: int) -> float:
        return self.prompt_tokens * self.usd_in + completion_tokens * self.usd_out


@dataclass
class Hold:
    """One call's reservation; settled or released once (later calls do nothing)."""

    tokens: int = 0
    usd: float = 0.0
    open: bool = True


@dataclass
class Grant:
    hold: Hold
    max_tokens: int | None  # what to send as max_tokens; None: leave the call as it is


class Reservations:
    """What the calls in flight of one run may still spend (``tokens``, ``usd``); ``spent`` (passed in)
    reads what is settled. Sync and async calls share ``lock``."""

    def __init__(self) -> None:
        self.tokens, self.usd, self.in_flight = 0, 0.0, 0
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)

    def reserve(self, need: CallNeed, limits: Limits, spent: Callable[[], tuple[float, int]],
                wait_s: float) -> Grant:
        """Reserve ``need`` (capping an open-ended completion to a share of the remainder); while calls
        in flight may give budget back it waits for them, at most ``wait_s``; raises ``BudgetExceeded``."""
        deadline = time.monotonic() + wait_s
        with self._changed:
            while True:
                grant = self._try(need, limits, spent)
                if grant is not None:
                    return grant
                left = deadline - time.monotonic()
                if self.in_flight == 0 or left <= 0:
                    raise BudgetExceeded(self._refusal(need, limits, spent))
                self._changed.wait(left)

    async def areserve(self, need: CallNeed, limits: Limits, spent: Callable[[], tuple[float, int]],
                       wait_s: float, poll_s: float = 0.05) -> Grant:
        """``reserve`` for the event loop: it polls instead of blocking the loop while it waits."""
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                grant = self._try(need, limits, spent)
                if grant is not None:
                    return grant
                if self.in_flight == 0 or time.monotonic() >= deadline:
                    raise BudgetExceeded(self._refusal(need, limits, spent))
            await asyncio.sleep(poll_s)

    def _try(self, need: CallNeed, limits: Limits, spent: Callable[[], tuple[float, int]]) -> Grant | None:
        usd, tokens = spent()
        free_tokens = None if limits.max_tokens is None else limits.max_tokens - tokens - self.tokens
        free_usd = None if limits.max_usd is None else limits.max_usd - usd - self.usd
        room = _completion_room(need, free_tokens, free_usd)
        if room is not None and room < MIN_COMPLETION_TOKENS:
            return None
        granted, send = _completion_grant(need, room)
        hold = Hold(tokens=need.prompt_tokens + granted, usd=need.usd(granted))
        self.tokens += hold.tokens
        self.usd += hold.usd
        self.in_flight += 1
        return Grant(hold, send)

    def _refusal(self, need: CallNeed, limits: Limits, spent: Callable[[], tuple[float, int]]) -> str:
        usd, tokens = spent()
        busy = " reserved by calls in flight" if self.in_flight else ""
        if limits.max_usd is not None and usd + self.usd + need.usd(MIN_COMPLETION_TOKENS) > limits.max_usd:
            return (f"USD budget exhausted: spent {_usd(usd)} of {_usd(limits.max_usd)}"
                    + (f", {_usd(self.usd)}{busy}" if busy else "")
                    + f"; this call needs about {_usd(need.usd(MIN_COMPLETION_TOKENS))}"
                    " (raise budgets.max_usd or AGENTLAB_BUDGETS__MAX_USD)")
        return (f"token budget exhausted: used {tokens} of {limits.max_tokens} tokens"
                + (f", {self.tokens}{busy}" if busy else "")
                + f"; this call needs about {need.prompt_tokens + MIN_COMPLETION_TOKENS}"
                " (raise budgets.max_tokens or AGENTLAB_BUDGETS__MAX_TOKENS)")

    def settle(self, hold: Hold, write: Callable[[], None]) -> None:
        """Write what the call really used (``write``: its ledger row) and drop its reservation, in one step."""
        with self._changed:
            write()
            self._drop(hold)

    def release(self, hold: Hold) -> None:
        """Drop a reservation without spending it (the call failed); nothing if it is settled already."""
        with self._changed:
            self._drop(hold)

    def _drop(self, hold: Hold) -> None:
        if hold.open:
            hold.open = False
            self.tokens -= hold.tokens
            self.usd -= hold.usd
            self.in_flight -= 1
            self._changed.notify_all()


def _usd(x: float) -> str:
    return f"${x:.4f}" if x == 0 or x >= 0.01 else f"${x:.6f}" if x >= 1e-6 else f"${x:.2e}"


def _completion_room(need: CallNeed, free_tokens: int | None, free_usd: float | None) -> float | None:
    """The most completion tokens the budgets leave for this call now; None when no budget binds it."""
    rooms = []
    if free_tokens is not None:
        rooms.append(free_tokens - need.prompt_tokens)
    if free_usd is not None and (need.usd_in or need.usd_out):
        usd_left = free_usd - need.prompt_tokens * need.usd_in
        rooms.append(math.floor(usd_left / need.usd_out) if need.usd_out else (math.inf if usd_left >= 0 else -1))
    return min(rooms) if rooms else None


def _completion_grant(need: CallNeed, room: float | None) -> tuple[int, int | None]:
    """(completion tokens reserved, max_tokens to send or None). A call may take at most half of the room,
    so that concurrent calls near the end of a budget each get a part instead of waiting for the first
    one; a call that asks for less, or whose model stops earlier, keeps that."""
    wanted = need.asked or need.model_max or DEFAULT_MAX_COMPLETION
    if room is None:  # no budget binds this call: nothing to cap
        return 0, None
    share = max(MIN_COMPLETION_TOKENS, int(min(room, 1 << 40)) // 2)
    granted = min(wanted, share)
    if need.asked is None and granted == need.model_max:
        return granted, None  # the model's own limit already bounds it
    return granted, granted


_RUNS: weakref.WeakValueDictionary[tuple[Path, str], Reservations] = weakref.WeakValueDictionary()
_RUNS_LOCK = threading.Lock()


def reservations_for(ledger_path: Path, run_id: str | None) -> Reservations:
    """The reservations of one run, shared by every gateway of that run in this process; a gateway
    without a run id has its own."""
    if run_id is None:
        return Reservations()
    key = (Path(ledger_path).resolve(), run_id)
    with _RUNS_LOCK:
        found = _RUNS.get(key)
        if found is None:
            found = _RUNS[key] = Reservations()
        return found
