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
run in a thread of their own. SQLite's own runs inside the COMMIT that takes the
log past 1,000 pages, while its writer still holds the lock: every writer behind
it waited those milliseconds too, and so did the request whose COMMIT it was.
Here a queued connection turns that off; after CHECKPOINT_EVERY write
transactions of its process or CHECKPOINT_ROWS rows written (whichever comes
first), its COMMIT wakes the process's checkpoint thread and returns. The thread
runs a PASSIVE checkpoint on a connection of its own, without the lock: it waits
for no one, and no one for it. The log starts over from its beginning only once a
checkpoint has copied all of it; under steady writes from several processes one
made outside the lock never has (others append meanwhile), so when the log is
longer than CHECKPOINT_RESET_FRAMES, the thread takes the lock and checkpoints
once more, copying the few pages appended since, as SQLite's own would.
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
# Pages in the log past which a checkpoint is run again under the lock, so that it copies the
# whole log and the log can start over: four times the length at which SQLite's own would run.
CHECKPOINT_RESET_FRAMES = 4_000
# Seconds a checkpoint thread waits to be asked again before it lets its connection go.
IDLE_SECONDS = 60.0


class WriterQueue:
    """The write lock of one database file for this process."""

    def __init__(self, path: str, timeout: float) -> None:
        self.database = path
        self.path = path + "-writer.lock"
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._fd_pid = 0
        self._commits = 0
        self._rows = 0
        self._checkpoints: _CheckpointThread | None = None
        self._checkpoints_lock = threading.Lock()

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

    def checkpoint_soon(self) -> None:
        """Have this process's checkpoint thread run a checkpoint (starting the thread when
        the process has none: a forked child, or one idle for a while)."""
        with self._checkpoints_lock:
            thread = self._checkpoints
            if thread is None or not thread.wake():
                thread = self._checkpoints = _CheckpointThread(self)
                thread.wake()

    def wait_for_checkpoints(self, timeout: float = 10.0) -> bool:
        """Wait until the checkpoints asked for so far have run; False on timeout."""
        thread = self._checkpoints
        return thread is None or thread.wait_idle(timeout)


def _passive_checkpoint(connection: sqlite3.Connection) -> int:
    """Copy what of the log no reader still needs into the database file; the pages in the
    log (what it holds whether copied or not)."""
    _busy, log_frames, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(log_frames)


class _CheckpointThread:
    """The thread of a process that checkpoints a database when its writers ask."""

    def __init__(self, queue: WriterQueue) -> None:
        self.queue = queue
        self._pid = os.getpid()
        self._state = threading.Condition()
        self._asked = self._done = 0
        self._stopped = False
        threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True).start()

    def wake(self) -> bool:
        """Ask for a checkpoint; False when this thread can take no more (it has stopped,
        or it belongs to the parent of a forked process)."""
        with self._state:
            if self._stopped or self._pid != os.getpid():
                return False
            self._asked += 1
            self._state.notify_all()
            return True

    def wait_idle(self, timeout: float) -> bool:
        with self._state:
            return self._state.wait_for(lambda: self._done >= self._asked or self._stopped,
                                        timeout)

    def _run(self) -> None:
        connection = None
        try:
            connection = sqlite3.connect(self.queue.database, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout={int(self.queue.timeout * 1000)}")
            while True:
                with self._state:
                    # Idle for a minute: let the connection go (a test's database, a quiet
                    # process).
                    if not self._state.wait_for(lambda: self._asked > self._done,
                                                IDLE_SECONDS):
                        self._stopped = True  # before a wake() can count on this thread
                        return
                    asked = self._asked
                self._checkpoint(connection)
                with self._state:
                    self._done = asked
                    self._state.notify_all()
        finally:
            # Stopped for good (idle, or the database could not be opened): the next commit
            # that wants a checkpoint starts another thread.
            with self._state:
                self._stopped = True
                self._state.notify_all()
            if connection is not None:
                connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        # The transactions are committed whatever happens here; the next checkpoint copies
        # what this one could not.
        with contextlib.suppress(sqlite3.Error):
            if _passive_checkpoint(connection) <= CHECKPOINT_RESET_FRAMES:
                return
            self.queue.acquire()
            try:
                _passive_checkpoint(connection)
            finally:
                self.queue.release()


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
        wrote = self._holding
        self._end_with(super().commit)
        if wrote and self.writers is not None:
            rows, self._rows_counted = self.total_changes - self._rows_counted, self.total_changes
            if self.writers.checkpoint_due(rows):
                self.writers.checkpoint_soon()

    def rollback(self) -> None:
        self._end_with(super().rollback)
        self._rows_counted = self.total_changes  # rows undone are not in the log

    def _end_with(self, end: Any) -> None:
        try:
            end()
        finally:
            if not self.in_transaction:  # a failed COMMIT keeps its transaction (and queue)
                self._let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._let_go()
