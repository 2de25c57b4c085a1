"""Schema and forward-only migrations, versioned by ``PRAGMA user_version``.

Each migration is a list of statements applied in one transaction with the version bump, so a
crash mid-migration leaves the old version intact. A store whose version is newer than the code
is refused rather than guessed at: downgrading a daemon must not scribble on a newer layout.

Layout decisions that carry guarantees:

* ``payloads`` are apart from ``schedules`` and ``firings`` and content-addressed, so the
  dispatcher's queries never touch payload bytes (DESIGN §4, §6) and a thousand firings of one
  schedule share one payload row.
* ``schedules.next_due_ms`` has a partial index (unpaused only): the loader reads only what is due
  soon, so memory follows the horizon, not the number of stored schedules.
* ``firings.key`` is UNIQUE: idempotency is enforced by the database, not by hope.
* Firings keep no foreign key to schedules: removing a schedule keeps its history.
* ``firings.retry_at_ms`` (v2) is when a ``failed`` firing's next attempt is due, stored so a
  retry survives a restart; a partial index on it lets the loader read only retries due soon,
  exactly as ``schedules_due`` does for schedules.
* v3 widens that index to ``firings_wake``: an ad-hoc firing submitted for a later time is
  stored ``scheduled`` with ``retry_at_ms`` = its due time, so one index and one loader path wake
  both (a delayed submission is a retry before its first attempt). Firings an older version
  left ``scheduled`` get their due time as wake time, so none sleeps forever.
* ``schedules.task_kind`` (v2) says whether a schedule runs a Python task, so the loader can
  tell the worker pool to pre-scale for a pulse without reading any payload.
* v4 ``firings.catchup`` marks a firing made for an occurrence that missed its grace (an
  outage, a forward clock jump): it is released by the catch-up drain at a bounded rate
  instead of queued with fresh work. The partial index ``firings_ready`` (committed only, by
  lane, catch-up flag and id) is how the runner reads back, in order, the committed firings it
  does not hold in memory (``[dispatch] max_ready``) and how the drain pages the backlog.
* v5 carries ``due_ms`` and ``state`` in ``firings_ready`` after the id (the order pages walk is
  unchanged), so the lane depths of ``status`` and the metrics (count and oldest due time by lane)
  are read from the index alone, never from the rows: 34 ms instead of 58 ms at 500 000 committed
  firings. ``state`` is there because SQLite 3.40 only treats a partial index as covering when it
  holds the columns of its own WHERE term.
* v6 takes ``committed`` out of ``firings_open``: ``firings_ready`` already holds every committed
  firing, and a pulse of them is most of what is ever open, so each was indexed twice. One
  index entry fewer per firing committed and one change fewer per run started: the same rows
  into schedd's table 165-168 k/s before, 184-186 k/s after (200 000 rows, 500 a
  transaction). Reads of every unfinished firing take the two indexes in turn.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1
    (
        """CREATE TABLE payloads (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            body TEXT NOT NULL
        )""",
        """CREATE TABLE schedules (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,
            rule TEXT NOT NULL,
            payload_id INTEGER NOT NULL REFERENCES payloads(id),
            spec_hash TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            fired_through_ms INTEGER,
            next_fire_ms INTEGER,
            next_due_ms INTEGER,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        )""",
        """CREATE INDEX schedules_due ON schedules(next_due_ms, id)
            WHERE next_due_ms IS NOT NULL AND paused = 0""",
        """CREATE TABLE firings (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            schedule_id INTEGER,
            schedule TEXT NOT NULL,
            scheduled_for_ms INTEGER NOT NULL,
            due_ms INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            crashes INTEGER NOT NULL DEFAULT 0,
            payload_id INTEGER NOT NULL REFERENCES payloads(id),
            lane TEXT NOT NULL,
            reason TEXT,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        )""",
        """CREATE INDEX firings_open ON firings(state, id)
            WHERE state IN ('scheduled', 'committed', 'running', 'failed')""",
        "CREATE INDEX firings_by_schedule ON firings(schedule, id)",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            firing_id INTEGER NOT NULL REFERENCES firings(id),
            schedule TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            state TEXT NOT NULL,
            pid INTEGER,
            pgid INTEGER,
            proc_start INTEGER,
            started_ms INTEGER NOT NULL,
            ended_ms INTEGER,
            exit_code INTEGER,
            signal INTEGER,
            reason TEXT,
            output BLOB,
            output_bytes INTEGER NOT NULL DEFAULT 0,
            output_truncated INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_by_firing ON runs(firing_id, attempt)",
        "CREATE INDEX runs_by_schedule ON runs(schedule, id)",
        "CREATE INDEX runs_running ON runs(state) WHERE state = 'running'",
    ),
    # version 2: retries, the dead-letter queue, pre-scaling
    (
        "ALTER TABLE firings ADD COLUMN retry_at_ms INTEGER",
        """CREATE INDEX firings_retry ON firings(retry_at_ms, id)
            WHERE state = 'failed' AND retry_at_ms IS NOT NULL""",
        """CREATE INDEX firings_dead ON firings(state, updated_ms)
            WHERE state IN ('dead', 'quarantined')""",
        "CREATE INDEX firings_payload ON firings(payload_id)",
        "ALTER TABLE schedules ADD COLUMN task_kind TEXT NOT NULL DEFAULT 'command'",
    ),
    # version 3: delayed ad-hoc firings wake through the retry index
    (
        "DROP INDEX firings_retry",
        """CREATE INDEX firings_wake ON firings(retry_at_ms, id)
            WHERE state IN ('failed', 'scheduled') AND retry_at_ms IS NOT NULL""",
        "UPDATE firings SET retry_at_ms = due_ms WHERE state = 'scheduled' AND retry_at_ms IS NULL",
    ),
    # version 4: the catch-up flag, and reading committed firings back in order
    (
        "ALTER TABLE firings ADD COLUMN catchup INTEGER NOT NULL DEFAULT 0",
        """CREATE INDEX firings_ready ON firings(lane, catchup, id)
            WHERE state = 'committed'""",
    ),
    # version 5: the lane depths read from firings_ready alone
    (
        "DROP INDEX firings_ready",
        """CREATE INDEX firings_ready ON firings(lane, catchup, id, due_ms, state)
            WHERE state = 'committed'""",
    ),
    # version 6: committed firings leave firings_open to firings_ready
    (
        "DROP INDEX firings_open",
        """CREATE INDEX firings_open ON firings(state, id)
            WHERE state IN ('scheduled', 'running', 'failed')""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
