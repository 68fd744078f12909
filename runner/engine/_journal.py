"""The journal: the only writer of a run's durable state while a worker holds it.

It keeps the decision log's chain head in memory (seq, hash), builds redacted, hash-chained events, seals
each new head (tenants.audit.seals; the MAC is computed here, the write stays one statement), and
applies :class:`~tenants.runs.journal.JournalWrite`\\ s through the tenant's journal repository on ONE pinned
connection per time slice, each as one fenced statement plus its commit, with database back-off. Events
that need no commit of their own (``run.started`` / ``run.resumed``) wait in :attr:`Journal.pending` and
ride on the next write. A write that fails leaves the in-memory chain as it was before.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from tenants.audit.seals import broken_marker, run_chain, seal
from tenants.kit.db import (
    Session,
    begin_explicit,
    commit_needed,
    is_transient_db_error,
    pinned_session,
    with_db_retry,
)
from tenants.kit.logging import get_logger, redact
from tenants.kit.tracing import current_trace_id
from tenants.runs.events import GENESIS, event_hash
from tenants.runs.journal import Flags, JournalWrite, journal_repository
from tenants.runs.repository import RunRepository

__all__ = ["Journal"]

log = get_logger("engine")
T = TypeVar("T")


class Journal:
    """One run's writer for one time slice (see the module docstring)."""

    def __init__(self, tenant_id: str, run_id: str, fence: int,
                 head: tuple[int, str | None, str | None], *, strict: bool, session: Session | None = None) -> None:
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.fence = fence
        self.seq, self.prev_hash = head[0], head[1] or GENESIS
        self.chain = run_chain(tenant_id, run_id)
        # The head this slice starts from must carry a valid seal; if not, every head it writes carries the
        # broken marker instead of a seal, so the next write cannot launder the tampering.
        self.broken = broken_marker("run", self.chain, (self.seq, self.prev_hash, head[2]))
        self.strict = strict  # every commit waits for the WAL flush (MIDWATCH_DURABILITY=strict)
        self.pending: list[dict[str, Any]] = []
        self._session: Session | None = session
        self._inflight: tuple[JournalWrite, Callable[[], Flags]] | None = None

    # ---- events ---------------------------------------------------------------------------
    def event(self, now: datetime, kind: str, **fields: Any) -> dict[str, Any]:
        """The next event of the chain (redacted and hashed), queued for the next write."""
        row: dict[str, Any] = {
            "run_id": self.run_id, "seq": self.seq + 1, "kind": kind,
            "item_index": fields.get("item_index"), "step_index": fields.get("step_index"),
            "step_id": fields.get("step_id"), "considered": redact(fields.get("considered")),
            "chosen": redact(fields.get("chosen")), "why": redact(fields.get("why")),
            "verdicts": redact(fields.get("verdicts")), "failure_category": fields.get("failure_category"),
            "cost_usd": fields.get("cost_usd", Decimal(0)),
            "latency_ms": round(float(fields.get("latency_ms", 0.0)), 3), "attempts": fields.get("attempts"),
            "input_hash": fields.get("input_hash"), "output_hash": fields.get("output_hash"),
            "created_at": now, "prev_hash": self.prev_hash, "trace_id": current_trace_id(),
        }
        row["hash"] = event_hash(self.prev_hash, row)
        self.seq += 1
        self.prev_hash = row["hash"]
        self.pending.append(row)
        return row

    def write(self, now: datetime, **parts: Any) -> JournalWrite:
        """A write of this run at ``now`` carrying every pending event (and ``parts``)."""
        write = JournalWrite(run_id=self.run_id, fence=self.fence, now=now, events=list(self.pending), **parts)
        if write.head is not None:
            write.head_seal = self.broken or seal("run", self.chain, *write.head)
        return write

    # ---- transactions ---------------------------------------------------------------------
    def session(self) -> Session:
        """The slice's pinned session (one pooled connection kept across commits)."""
        if self._session is None:
            self._session = pinned_session()
        return self._session

    def detach(self) -> Session | None:
        """Hand the pinned session to the caller (the worker loop reuses it for its next claim). A slice ends
        with a commit, so no write is in flight then; if one is (a slice left by an exception), the session
        is discarded instead."""
        if self._inflight is not None:
            self.discard()
        session, self._session = self._session, None
        return session

    def discard(self) -> None:
        """Roll back and hand the connection back to the pool (after an error, or at the slice's end)."""
        if self._session is None:
            return
        try:
            if self._inflight is not None:  # its answer must be read before the connection is used again
                self._inflight[1]()
        except Exception:  # the slice is being dropped: the run resumes from what the database holds
            log.debug("inflight_write_dropped", exc_info=True)
        self._inflight = None
        try:
            self._session.rollback()
            self._session.close()
            bind = self._session.bind
            if bind is not None and hasattr(bind, "close"):
                bind.close()
        except Exception:  # the connection may already be gone
            log.debug("session_close_failed", exc_info=True)
        self._session = None

    def commit(self, write: JournalWrite | Callable[[Session], JournalWrite], *, durable: bool = True,
               what: str = "write", after: Callable[[Session, Flags], None] | None = None,
               atomic: bool = False) -> Flags:
        """Apply ``write`` and commit it; ``after`` runs in the same transaction once the write held.

        A plain write is one statement, its own transaction (one round trip on PostgreSQL). ``atomic`` (implied
        when ``write`` is a function) opens a real transaction for work of several statements: ``write`` may be
        a function of the session that builds the write after reading what it needs (the approval gate and
        the ledger decide from rows they read in the same transaction), and ``after`` may write rows too.
        ``durable=False`` (a pure step, a hand-back) lets PostgreSQL commit without waiting for the WAL
        flush unless the journal is strict; only a server crash can lose such a commit, and the run then
        simply redoes that pure work. A plain write retried after the database went away is applied again
        only if its last event is not in the log (:meth:`_apply_unless_landed`).
        """
        applied: list[JournalWrite] = []
        # One statement, its own transaction: if the database went away before its answer came, the server may
        # have committed it; the retry then looks for its last event in the log instead of applying it twice.
        single = not callable(write) and after is None and not atomic

        def body(session: Session) -> Flags:
            if single and applied:
                return self._apply_unless_landed(session, applied[0])
            applied[:] = [write(session) if callable(write) else write]
            flags = journal_repository(session, self.tenant_id).write(applied[0], durable=durable or self.strict)
            if after is not None:
                after(session, flags)
            return flags

        flags = self.transaction(body, what, atomic=atomic or callable(write))
        del self.pending[:len(applied[0].events)]
        return flags

    def commit_later(self, write: JournalWrite) -> Flags | None:
        """A pure step's write, sent without waiting for it: the server commits it while the next step runs.

        For a step with no side effect and no release, at the default durability (``MIDWATCH_DURABILITY=
        strict`` commits it now). The write is one autocommitted statement on PostgreSQL (elsewhere it is
        written now), and every later use of the connection first reads its answer (:meth:`settle`), so
        the writes still land one after the other, in order. What it costs: a cancel or suspension this
        write reports is seen one step later. Returns the flags of the write before it, if one was in flight.
        """
        flags = self.settle()
        if self.strict:
            return self.commit(write, durable=False, what="checkpoint")
        sent = self.transaction(lambda s: journal_repository(s, self.tenant_id).send(write, durable=False),
                                "checkpoint", atomic=False)
        self._inflight = (write, sent)
        del self.pending[:len(write.events)]
        return flags

    def settle(self) -> Flags | None:
        """Wait for the write in flight (:meth:`commit_later`), if any, and return its flags.

        A database that went away has the write applied again, with back-off, as any write. Any other
        failure (a lost lease, a bug) rewinds the in-memory chain to before that write, dropping the events
        made since (their step is abandoned with the exception), so the next write the slice makes
        continues the chain from what the database holds."""
        if self._inflight is None:
            return None
        write, answer = self._inflight
        self._inflight = None
        try:
            return answer()
        except Exception as exc:
            self.discard()
            if is_transient_db_error(exc):
                return self.transaction(lambda s: self._apply_unless_landed(s, write), "checkpoint", atomic=False)
            first = write.events[0]
            self.seq, self.prev_hash, self.pending = first["seq"] - 1, first["prev_hash"], list(write.events)
            raise

    def _apply_unless_landed(self, session: Session, write: JournalWrite) -> Flags:
        """Apply ``write`` again after the connection it was sent on failed, unless it had landed (the server
        may have committed it before the connection went): its last event is in the log, hash for hash (another
        worker's event at that place would differ; the write applied again then raises LeaseLost)."""
        if write.head is not None:
            seq, digest = write.head
            found = RunRepository(session, self.tenant_id).events(self.run_id, after=seq - 1, limit=1)
            if found and found[0].seq == seq and found[0].hash == digest:
                return Flags(False, False)  # it landed; the next write reports the flags
        return journal_repository(session, self.tenant_id).write(write, durable=False)

    def transaction(self, body: Callable[[Session], T], what: str, *, atomic: bool = True) -> T:
        """Run ``body`` in one transaction with back-off; the in-memory chain rolls back with it.
        ``atomic=False``: ``body`` runs a single statement (or only reads), which needs no explicit transaction
        (on PostgreSQL's autocommit connection, nor a commit)."""
        self.settle()
        seq, prev, pending = self.seq, self.prev_hash, list(self.pending)

        def attempt() -> T:
            self.seq, self.prev_hash, self.pending = seq, prev, list(pending)  # a retried body starts afresh
            session = self.session()
            try:
                if atomic:
                    begin_explicit(session)
                result = body(session)
                if atomic or commit_needed(session):
                    session.commit()
            except BaseException:
                self.discard()
                raise
            return result

        try:
            return with_db_retry(attempt, what)
        except BaseException:
            self.seq, self.prev_hash, self.pending = seq, prev, pending
            raise

    def read(self, body: Callable[[Session], T], what: str) -> T:
        """Reads on the slice's connection (each statement sees the latest committed data)."""
        return self.transaction(body, what, atomic=False)
