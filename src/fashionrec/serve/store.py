"""Durable feedback and experiment log. SQLite in WAL mode is the embedded default; anything that
implements `Store` (Redis, Postgres) can replace it.

Every write commits with synchronous=FULL before the API acknowledges it, so an acknowledged
event survives the server being killed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from fashionrec.atomic import check_path
from fashionrec.errors import ConfigError

EVENTS = ("unlike", "click", "purchase")

# One row per list shown, its articles a JSON array: at ~6 us to write a row, a row per article
# cost about as much as answering the request
IMPRESSIONS = """
CREATE TABLE IF NOT EXISTS impressions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    customer_id TEXT NOT NULL,
    article_ids TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    experiment TEXT,
    arm TEXT
)"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    customer_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_customer ON feedback (customer_id, event);
{IMPRESSIONS};
-- only experiment impressions are ever looked up
CREATE INDEX IF NOT EXISTS impressions_by_customer ON impressions (customer_id)
    WHERE experiment IS NOT NULL;
CREATE INDEX IF NOT EXISTS impressions_by_arm ON impressions (experiment, arm)
    WHERE experiment IS NOT NULL;
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    arms TEXT NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
"""

# stores written before: one impression row per article, regrouped into the lists they came in
# (one `log_impressions` call: same ts, customer, model and arm)
REGROUP = """
INSERT INTO impressions (ts, customer_id, article_ids, model, version, experiment, arm)
SELECT ts, customer_id, json_group_array(article_id), model, version, experiment, arm
FROM (SELECT * FROM impressions_per_article ORDER BY id)
GROUP BY ts, customer_id, model, version, experiment, arm
ORDER BY MIN(id)
"""


class Store(Protocol):
    """What the service needs from a feedback store."""

    def add_feedback(self, customer_id: str, article_id: str, event: str) -> int: ...

    def articles(self, customer_id: str, event: str) -> list[str]: ...

    def history(self, customer_id: str) -> dict[str, list[str]]: ...

    def flush(self) -> None: ...

    def log_impressions(
        self,
        customer_id: str,
        article_ids: Iterable[str],
        model: str,
        version: str,
        experiment: str | None,
        arm: str | None,
    ) -> None: ...

    def arm_of_click(self, customer_id: str, article_id: str) -> tuple[str, str] | None: ...

    def arm_stats(self, experiment: str) -> dict[str, dict[str, int]]: ...

    def save_experiment(self, name: str, kind: str, arms: list[str], params: dict) -> None: ...

    def experiments(self) -> list[dict]: ...


class SQLiteStore:
    """Store on one SQLite file; one connection per thread, WAL so readers never block writers."""

    def __init__(self, path: str | Path, flush_seconds: float = 1.0) -> None:
        self.path = Path(path)
        check_path(self.path)  # a file's name, under a directory
        self._local = threading.local()
        self._buffer: list[tuple] = []
        self._buffer_lock = threading.Lock()
        self._due = threading.Event()
        self.flush_seconds = flush_seconds
        self._writer: threading.Thread | None = None
        try:
            conn = self._conn()
            _regroup_impressions(conn)
            conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:  # another kind of file, or a place it cannot write
            raise ConfigError(f"{self.path}: not a usable SQLite feedback store ({exc})") from None

    def _conn(self, durable: bool = True) -> sqlite3.Connection:
        """This thread's connection: synchronous=FULL (fsync on commit) for feedback; NORMAL for
        the impression log, which then survives a killed process but maybe not a power cut."""
        key = "durable" if durable else "fast"
        conn = getattr(self._local, key, None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            setattr(self._local, key, conn)
        return conn

    def add_feedback(self, customer_id: str, article_id: str, event: str) -> int:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        conn = self._conn()
        cur = conn.execute(
            "INSERT INTO feedback (ts, customer_id, article_id, event) VALUES (?, ?, ?, ?)",
            (time.time(), customer_id, article_id, event),
        )
        return int(cur.lastrowid)

    def articles(self, customer_id: str, event: str) -> list[str]:
        """The articles of a customer's `event` feedback, oldest first."""
        rows = self._conn().execute(
            "SELECT article_id FROM feedback WHERE customer_id = ? AND event = ? ORDER BY id",
            (customer_id, event),
        )
        return [r[0] for r in rows]

    def history(self, customer_id: str) -> dict[str, list[str]]:
        """A customer's unliked and purchased articles (oldest first), in one query."""
        out: dict[str, list[str]] = {"unlike": [], "purchase": []}
        rows = self._conn().execute(
            "SELECT event, article_id FROM feedback WHERE customer_id = ? "
            "AND event IN ('unlike', 'purchase') ORDER BY id",
            (customer_id,),
        )
        for event, article in rows:
            out[event].append(article)
        return out

    def log_impressions(
        self,
        customer_id: str,
        article_ids: Iterable[str],
        model: str,
        version: str,
        experiment: str | None,
        arm: str | None,
    ) -> None:
        """Buffered and written by a background thread (at most `flush_seconds` late): one
        transaction per request, or a batch written on the request path, would cost more than the
        recommendation itself (a batch commit stalled 1 request in 170 by ~50 ms). Impressions
        are analytics; feedback is what must never be lost."""
        ids = json.dumps(list(article_ids), separators=(",", ":"))
        row = (time.time(), customer_id, ids, model, version, experiment, arm)
        with self._buffer_lock:
            self._buffer.append(row)
            full = len(self._buffer) >= 2048
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, daemon=True)
                self._writer.start()
        if full:
            self._due.set()

    def _write_loop(self) -> None:
        while True:
            self._due.wait(self.flush_seconds)
            self._due.clear()
            self.flush()

    def flush(self) -> None:
        """Write the buffered impressions."""
        with self._buffer_lock:
            rows, self._buffer = self._buffer, []
        if not rows:
            return
        conn = self._conn(durable=False)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO impressions (ts, customer_id, article_ids, model, version, experiment, "
            "arm) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")

    def arm_of_click(self, customer_id: str, article_id: str) -> tuple[str, str] | None:
        """(experiment, arm) of the latest impression of this article to this customer."""
        self.flush()
        row = (
            self._conn()
            .execute(
                "SELECT experiment, arm FROM impressions WHERE customer_id = ? "
                "AND experiment IS NOT NULL AND ? IN (SELECT value FROM json_each(article_ids)) "
                "ORDER BY id DESC LIMIT 1",
                (customer_id, article_id),
            )
            .fetchone()
        )
        return (row[0], row[1]) if row else None

    def arm_stats(self, experiment: str) -> dict[str, dict[str, int]]:
        """Per arm: impressions (articles shown) and clicks on an article shown by that arm."""
        self.flush()
        conn = self._conn()
        shown = dict(
            conn.execute(
                "SELECT arm, SUM(json_array_length(article_ids)) FROM impressions "
                "WHERE experiment = ? GROUP BY arm",
                (experiment,),
            )
        )
        # a click counts for the arm whose impression of that article came last before it, and
        # an article shown once counts one click however often it is clicked (clicks <= shown)
        clicks = dict(
            conn.execute(
                """
            SELECT i.arm, COUNT(DISTINCT i.id || ' ' || f.article_id) FROM feedback f
            JOIN impressions i ON i.id = (
                SELECT id FROM impressions WHERE customer_id = f.customer_id
                AND experiment = ? AND ts <= f.ts
                AND f.article_id IN (SELECT value FROM json_each(article_ids))
                ORDER BY id DESC LIMIT 1)
            WHERE f.event = 'click' GROUP BY i.arm
            """,
                (experiment,),
            )
        )
        arms = set(shown) | set(clicks)
        return {
            a: {"impressions": int(shown.get(a, 0)), "clicks": int(clicks.get(a, 0))}
            for a in sorted(arms)
        }

    def save_experiment(self, name: str, kind: str, arms: list[str], params: dict) -> None:
        """A new experiment; a ConfigError if the name exists (checked by the insert itself, so
        two workers creating one name at once cannot both succeed)."""
        try:
            self._conn().execute(
                "INSERT INTO experiments (name, kind, arms, params, created, active) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (name, kind, json.dumps(arms), json.dumps(params), time.time()),
            )
        except sqlite3.IntegrityError:
            raise ConfigError(f"experiment {name!r} exists") from None

    def experiments(self) -> list[dict]:
        rows = self._conn().execute(
            "SELECT name, kind, arms, params, created, active FROM experiments ORDER BY created"
        )
        return [
            {
                "name": n,
                "kind": k,
                "arms": json.loads(a),
                "params": json.loads(p),
                "created": c,
                "active": bool(act),
            }
            for n, k, a, p, c, act in rows
        ]


def _regroup_impressions(conn: sqlite3.Connection) -> None:
    """Move a store's per-article impression rows (the layout before lists) into lists, once."""
    conn.execute("BEGIN IMMEDIATE")  # two workers may start at once: one migrates
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(impressions)")}
        if "article_id" in columns:
            conn.execute("ALTER TABLE impressions RENAME TO impressions_per_article")
            conn.execute(IMPRESSIONS)
            conn.execute(REGROUP)
            conn.execute("DROP TABLE impressions_per_article")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
