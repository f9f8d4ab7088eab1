"""SQLite writers queue on an OS lock (mailer.sqlite_writers): real database files, real
processes; whatever database the suite runs on, these use SQLite files of their own."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import create_engine

from mailer import sqlite_writers
from mailer.database import truncate_sqlite_wal
from mailer.sqlite_writers import (
    CHECKPOINT_EVERY,
    CHECKPOINT_ROWS,
    QueuedConnection,
    WriterQueue,
)


def connect(path, queue: WriterQueue) -> QueuedConnection:
    connection = sqlite3.connect(path, factory=QueuedConnection, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=10000")
    connection.queue_writers(queue)
    return connection


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "queue.db")
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    setup.commit()
    setup.close()
    return path


def test_a_write_transaction_holds_the_queue_from_its_first_write_to_commit(database):
    queue = WriterQueue(database, timeout=5)
    connection = connect(database, queue)
    connection.execute("SELECT count(*) FROM t").fetchone()  # reads take nothing
    assert queue._thread_lock.locked() is False
    connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert queue._thread_lock.locked() is True
    connection.execute("INSERT INTO t (v) VALUES ('b')")  # the same transaction: held once
    connection.commit()
    assert queue._thread_lock.locked() is False
    connection.execute("UPDATE t SET v = 'c' WHERE v = 'a'")
    connection.rollback()
    assert queue._thread_lock.locked() is False
    assert [v for (v,) in connection.execute("SELECT v FROM t ORDER BY id")] == ["a", "b"]


def test_a_write_that_fails_before_its_transaction_opens_lets_go(database):
    queue = WriterQueue(database, timeout=5)
    connection = connect(database, queue)
    connection.isolation_level = None  # autocommit: each write is its own transaction
    connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert queue._thread_lock.locked() is False
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("INSERT INTO t (v) VALUES ('a')")
    assert queue._thread_lock.locked() is False


def test_a_second_connection_of_the_process_waits_then_gives_up_like_sqlite(database):
    queue = WriterQueue(database, timeout=0.3)
    first, second = connect(database, queue), connect(database, queue)
    first.execute("INSERT INTO t (v) VALUES ('a')")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        second.execute("INSERT INTO t (v) VALUES ('b')")
    assert 0.25 < time.monotonic() - started < 2
    first.commit()
    second.execute("INSERT INTO t (v) VALUES ('b')")
    second.commit()


def test_a_thread_waiting_to_write_goes_on_as_soon_as_the_writer_commits(database):
    queue = WriterQueue(database, timeout=5)
    first, second = connect(database, queue), connect(database, queue)
    first.execute("INSERT INTO t (v) VALUES ('a')")
    done = []

    def write() -> None:
        second.execute("INSERT INTO t (v) VALUES ('b')")
        done.append(time.monotonic())
        second.commit()

    waiter = threading.Thread(target=write)
    waiter.start()
    time.sleep(0.2)
    assert done == []
    committed = time.monotonic()
    first.commit()
    waiter.join(5)
    assert done and done[0] - committed < 0.05


WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    from mailer.sqlite_writers import QueuedConnection, queue_for
    connection = sqlite3.connect(sys.argv[1], factory=QueuedConnection)
    connection.execute("PRAGMA busy_timeout=10000")
    connection.queue_writers(queue_for(sys.argv[1], 10))
    connection.execute("INSERT INTO t (v) VALUES ('child')")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    connection.commit()
    print(repr(time.monotonic()), flush=True)
""")


def test_processes_queue_on_the_lock_file_and_the_next_wakes_at_the_commit(database):
    """Another process's write transaction is waited for on the lock file, not in SQLite's
    busy handler: the write goes on right after the other's COMMIT."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, database, "0.5"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "holding"
    with open(database + "-writer.lock", "rb") as lock_file, pytest.raises(BlockingIOError):
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the child holds the file
    connection = connect(database, WriterQueue(database, timeout=10))
    connection.execute("INSERT INTO t (v) VALUES ('parent')")
    wrote = time.monotonic()
    connection.commit()
    child_committed = float(child.stdout.readline())
    child.stdout.close()
    assert child.wait(10) == 0
    # The child's commit came first (it reads its clock just after letting go), and this
    # write followed within a few milliseconds
    # (SQLite's busy handler alone sleeps in steps of up to 100 ms by then).
    assert -0.05 < wrote - child_committed < 0.05
    assert [v for (v,) in connection.execute("SELECT v FROM t ORDER BY id")] == ["child",
                                                                                 "parent"]


def rows_in_the_database_file(path) -> int:
    """Rows of t in the main file alone, the write-ahead log left unread (what checkpoints
    have copied there)."""
    main_only = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return main_only.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        main_only.close()


def watch_checkpoints(monkeypatch, queue: WriterQueue,
                      gate: threading.Event | None = None) -> list[bool]:
    """Whether the queue was held at each checkpoint from now on; with a `gate`, each waits
    for it to be set first."""
    held_at_checkpoint: list[bool] = []
    checkpoint = sqlite_writers._passive_checkpoint

    def watched(connection: sqlite3.Connection) -> int:
        if gate is not None:
            assert gate.wait(10)
        # A second descriptor of the lock file: flock() refuses it while the queue is held.
        probe = open(queue.path, "rb")  # noqa: SIM115
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            held_at_checkpoint.append(False)
        except BlockingIOError:
            held_at_checkpoint.append(True)
        finally:
            probe.close()
        return checkpoint(connection)

    monkeypatch.setattr(sqlite_writers, "_passive_checkpoint", watched)
    return held_at_checkpoint


def write_transactions(connection: QueuedConnection, count: int, prefix: str) -> None:
    for i in range(count):
        connection.execute("INSERT INTO t (v) VALUES (?)", (f"{prefix}{i}",))
        connection.commit()


def log_frames(path) -> int:
    """Pages in the write-ahead log, as a checkpoint that copies nothing reports them."""
    other = sqlite3.connect(path)
    try:
        return other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        other.close()


def test_a_checkpoint_follows_every_so_many_write_transactions_in_a_thread_of_its_own(
        database, monkeypatch):
    queue = WriterQueue(database, timeout=5)
    connection = connect(database, queue)
    # SQLite's own checkpoint, inside COMMIT and so under the lock, is off.
    assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    gate = threading.Event()
    held_at_checkpoint = watch_checkpoints(monkeypatch, queue, gate)
    for i in range(CHECKPOINT_EVERY - 1):
        write_transactions(connection, 1, f"v{i}-")
        connection.execute("SELECT count(*) FROM t").fetchone()  # reads count for nothing
        connection.commit()
    assert queue.wait_for_checkpoints(1)
    assert held_at_checkpoint == []
    assert rows_in_the_database_file(database) == 0  # all of it still in the log
    write_transactions(connection, 1, "last")
    # The COMMIT that asked for the checkpoint did not wait for it, and writers go on.
    assert not queue.wait_for_checkpoints(0.2)
    write_transactions(connection, 1, "meanwhile")
    gate.set()
    assert queue.wait_for_checkpoints()
    assert held_at_checkpoint == [False]
    assert rows_in_the_database_file(database) >= CHECKPOINT_EVERY
    # A rolled-back transaction is not counted.
    connection.execute("INSERT INTO t (v) VALUES ('undone')")
    connection.rollback()
    assert queue.wait_for_checkpoints()
    assert held_at_checkpoint == [False]


def test_a_log_that_cannot_start_over_is_checkpointed_again_under_the_lock(
        database, monkeypatch):
    """A checkpoint outside the lock copies the log only as far as it was when it started;
    while others write (here: a reader holds an old snapshot, which stops it the same way)
    the log never gets copied whole, never starts over and grows. Once it is long, each
    checkpoint runs once more under the lock, which copies it all, and the next write starts
    it over."""
    monkeypatch.setattr(sqlite_writers, "CHECKPOINT_RESET_FRAMES", 2 * CHECKPOINT_EVERY)
    queue = WriterQueue(database, timeout=5)
    connection = connect(database, queue)
    held_at_checkpoint = watch_checkpoints(monkeypatch, queue)
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)  # an old snapshot
    rounds = 0
    while True not in held_at_checkpoint:
        rounds += 1
        assert rounds < 10, "the log never grew long"
        write_transactions(connection, CHECKPOINT_EVERY, f"a{rounds}-")
        assert queue.wait_for_checkpoints()
    assert rounds >= 2  # short at the first checkpoint
    assert held_at_checkpoint == [False] * rounds + [True]
    assert rows_in_the_database_file(database) == 0  # the reader kept every page in the log
    grown = log_frames(database)
    reader.execute("COMMIT")
    reader.close()
    write_transactions(connection, CHECKPOINT_EVERY, "b")
    assert queue.wait_for_checkpoints()
    assert held_at_checkpoint[-1] is True
    assert rows_in_the_database_file(database) == (rounds + 1) * CHECKPOINT_EVERY
    write_transactions(connection, 1, "c")  # the log starts over from its beginning
    assert log_frames(database) < grown
    assert log_frames(database) <= 2


def test_a_forked_process_checkpoints_in_a_thread_of_its_own(database):
    """A thread does not survive fork(): the child starts its own."""
    queue = WriterQueue(database, timeout=5)
    connection = connect(database, queue)
    write_transactions(connection, CHECKPOINT_EVERY, "parent")
    assert queue.wait_for_checkpoints()
    connection.close()
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when its checkpoint ran
        ok = False
        try:
            child = connect(database, queue)
            write_transactions(child, CHECKPOINT_EVERY, "child")
            ok = queue.wait_for_checkpoints() and rows_in_the_database_file(database) == (
                2 * CHECKPOINT_EVERY)
        finally:
            os._exit(0 if ok else 1)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_transaction_of_many_rows_is_checkpointed_at_once(database):
    queue = WriterQueue(database, timeout=5)
    connection = connect(database, queue)
    connection.execute("INSERT INTO t (v) VALUES ('undone')")
    connection.rollback()  # rows rolled back count for nothing
    connection.executemany("INSERT INTO t (v) VALUES (?)",
                           ((f"v{i}",) for i in range(CHECKPOINT_ROWS - 1)))
    connection.commit()
    assert rows_in_the_database_file(database) == 0
    connection.execute("INSERT INTO t (v) VALUES ('last')")
    connection.commit()
    assert queue.wait_for_checkpoints()
    assert rows_in_the_database_file(database) == CHECKPOINT_ROWS


def test_the_log_is_emptied_after_an_erasure_even_while_another_connection_checkpoints(
        database):
    """SQLite answers a checkpoint busy at once, without waiting, while another connection's
    checkpoint runs (a process's checkpoint thread): the one that must empty the log (after
    an erasure) tries again until it has."""
    engine = create_engine(f"sqlite:///{database}")
    stop = threading.Event()

    def checkpoint_all_the_time() -> None:
        other = sqlite3.connect(database)
        while not stop.is_set():
            other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        other.close()

    writer = sqlite3.connect(database)
    checkpointer = threading.Thread(target=checkpoint_all_the_time)
    checkpointer.start()
    try:
        for i in range(30):
            writer.execute("INSERT INTO t (v) VALUES (?)", (f"r{i}",))
            writer.commit()
            assert truncate_sqlite_wal(engine, wait_seconds=5)
            assert os.path.getsize(database + "-wal") == 0
    finally:
        stop.set()
        checkpointer.join()
        writer.close()
        engine.dispose()
