"""The outbox row a job is running for, so the job can mark it done in its own last
transaction — its effect and its done mark then commit together (``done_in``), and the outbox
spares a transaction of its own (``gateway/jobs/outbox.py``)."""
from __future__ import annotations

from contextvars import ContextVar

from sqlalchemy import update

from gateway.store.db import outbox

_RUNNING: ContextVar[dict | None] = ContextVar("cdeg_outbox_running", default=None)


def running(outbox_id: int):
    """Set while ``outbox_id``'s job runs; answers the token to ``finished`` with."""
    return _RUNNING.set({"id": outbox_id, "done": False})


def finished(token) -> bool:
    """Unset; whether the job marked its row done itself."""
    state = _RUNNING.get()
    _RUNNING.reset(token)
    return bool(state and state["done"])


def done_in(conn, now: int) -> None:
    """Inside a job's transaction: its outbox row is done when this transaction commits (a job
    run outside the outbox — a test, an operator — has no row, and nothing is marked)."""
    state = _RUNNING.get()
    if state is not None:
        conn.execute(update(outbox).where(outbox.c.id == state["id"]).values(done_at=now))
        state["done"] = True
