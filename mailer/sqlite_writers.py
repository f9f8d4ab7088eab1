"""SQLite writers queue on an operating-system lock instead of SQLite's busy handler.

SQLite lets one connection write at a time. A writer that finds the lock taken
calls the busy handler, which sleeps 1, 2, 5, 10... milliseconds between tries
however soon the lock is free: with two web processes writing, a request that
collides loses a millisecond or more, and the slowest requests several. Here
each write transaction first takes a lock of the process (a threading.Lock, so
two connections of one process queue in order and give up after the busy
timeout, as SQLite would make them) and then an exclusive flock() on a file
beside the database, shared by every process that opens the database through
this module: the kernel wakes the next writer the moment the last one commits.

The locks are taken before the first write statement of a transaction (the
Python driver opens the transaction there) and let go after its COMMIT or
ROLLBACK. Readers take nothing: WAL lets them read beside the writer. A process
that is not a mailer (the sqlite3 shell) still meets SQLite's own lock and busy
handler, as before.

Checkpoints (copying the write-ahead log into the database file, with an fsync)
run after the locks are let go. SQLite's own runs inside the COMMIT that takes
the log past 1,000 pages, while its writer still holds the lock: every writer
behind it waited those milliseconds too. Here a queued connection turns that off
and, after CHECKPOINT_EVERY write transactions of its process or CHECKPOINT_ROWS
rows written (whichever comes first), runs a PASSIVE checkpoint once its lock is
let go: it waits for no one, and no one for it. The log starts over from its
beginning only once a checkpoint has copied all of it; under steady writes from
several processes one made outside the lock never has (others append meanwhile),
so when a checkpoint finds the log longer than CHECKPOINT_RESET_FRAMES, the next
runs before its lock is let go, as SQLite's own does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from typing import Any

# Statements that write (the driver opens its transaction before these).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# Write transactions of a process between its checkpoints: at the ten-odd pages of a new
# contact, about the 1,000 pages of log at which SQLite's own would run...
CHECKPOINT_EVERY = 64
# ...or rows written (a campaign's fan-out writes 100,000 a transaction).
CHECKPOINT_ROWS = 10_000
# Pages in the log past which the next checkpoint holds the lock, so that it copies the whole
# log and the log can start over: four times the length at which SQLite's own would run.
CHECKPOINT_RESET_FRAMES = 4_000


class WriterQueue:
    """The write lock of one database file for this process."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path + "-writer.lock"
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._fd_pid = 0
        self._commits = 0
        self._rows = 0
        # The log was longer than CHECKPOINT_RESET_FRAMES at the last checkpoint.
        self.log_too_long = False

    def _file(self) -> int:
        # A descriptor inherited across fork() shares its flock with the parent: each
        # process opens its own.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    def acquire(self) -> None:
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked")
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def checkpoint_due(self, rows: int) -> bool:
        """Count a committed write transaction of `rows` rows; True when a checkpoint is due
        (and then count from nought again)."""
        # Threads may race here: a checkpoint early or late is harmless.
        self._commits += 1
        self._rows += rows
        if self._commits < CHECKPOINT_EVERY and self._rows < CHECKPOINT_ROWS:
            return False
        self._commits = self._rows = 0
        return True


_queues: dict[str, WriterQueue] = {}
_queues_lock = threading.Lock()


def queue_for(path: str, timeout: float) -> WriterQueue:
    """The one WriterQueue of this process for a database file."""
    key = os.path.abspath(path)
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = WriterQueue(key, timeout)
        return queue


class QueuedCursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> QueuedCursor:
        return self._queued(super().execute, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> QueuedCursor:
        return self._queued(super().executemany, sql, seq_of_parameters)

    def _queued(self, run: Any, sql: str, parameters: Any) -> QueuedCursor:
        connection: QueuedConnection = self.connection  # type: ignore[assignment]
        connection.before_statement(sql)
        try:
            run(sql, parameters)
        finally:
            connection.after_statement()
        return self


class QueuedConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions hold the database's WriterQueue
    (pass it as `factory=` to sqlite3.connect, with the queue set by `queue_writers`)."""

    writers: WriterQueue | None = None
    _holding = False
    _rows_counted = 0  # total_changes when the last write transaction ended

    def queue_writers(self, writers: WriterQueue) -> None:
        self.writers = writers
        # This connection checkpoints after its COMMIT has let go of the lock, not in it.
        super().execute("PRAGMA wal_autocheckpoint=0")

    def cursor(self, factory: Any = QueuedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    # The shortcuts make a plain cursor inside the C code, not through cursor().
    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def before_statement(self, sql: str) -> None:
        if (self.writers is not None and not self._holding and not self.in_transaction
                and sql.lstrip()[:7].upper().startswith(_WRITES)):
            self.writers.acquire()
            self._holding = True

    def after_statement(self) -> None:
        # A write that failed before the transaction opened, or ran in autocommit mode.
        if self._holding and not self.in_transaction:
            self._let_go()

    def _let_go(self) -> None:
        if self._holding:
            self._holding = False
            assert self.writers is not None
            self.writers.release()

    def commit(self) -> None:
        writers = self.writers if self._holding else None
        try:
            super().commit()
        except BaseException:
            if not self.in_transaction:  # a failed COMMIT keeps its transaction (and queue)
                self._let_go()
            raise
        if writers is None:
            self._let_go()
            return
        rows, self._rows_counted = self.total_changes - self._rows_counted, self.total_changes
        if not writers.checkpoint_due(rows):
            self._let_go()
        elif writers.log_too_long:
            try:
                self._checkpoint(writers)
            finally:
                self._let_go()
        else:
            self._let_go()
            self._checkpoint(writers)

    def rollback(self) -> None:
        self._end_with(super().rollback)
        self._rows_counted = self.total_changes  # rows undone are not in the log

    def _end_with(self, end: Any) -> None:
        try:
            end()
        finally:
            if not self.in_transaction:  # a failed COMMIT keeps its transaction (and queue)
                self._let_go()

    def _checkpoint(self, writers: WriterQueue) -> None:
        # The transaction is committed whatever happens here; the next checkpoint copies what
        # this one could not.
        with contextlib.suppress(sqlite3.Error):
            _busy, log_frames, _copied = super().execute(
                "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            writers.log_too_long = log_frames > CHECKPOINT_RESET_FRAMES

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._let_go()
