"""The database schema, as the ordered migrations that build it."""

from __future__ import annotations

from collections.abc import Sequence

# Each entry upgrades the schema by one version. Never edit a shipped entry; append.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE functions (
        name        TEXT PRIMARY KEY,
        manifest    TEXT NOT NULL,
        source_dir  TEXT NOT NULL,
        version     TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE versions (
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        image       TEXT NOT NULL,
        status      TEXT NOT NULL,
        builder     TEXT,
        build_log   TEXT NOT NULL DEFAULT '',
        build_seconds REAL,
        manifest    TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (function, version)
    );
    CREATE TABLE instances (
        id          TEXT PRIMARY KEY,
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        backend     TEXT NOT NULL,
        address     TEXT NOT NULL,
        state       TEXT NOT NULL,
        started_at  REAL NOT NULL,
        ready_seconds REAL
    );
    CREATE INDEX instances_by_function ON instances(function);
    """,
    """
    CREATE TABLE logs (
        id          INTEGER PRIMARY KEY,
        ts          REAL NOT NULL,
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        instance    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        call_id     TEXT,
        line        TEXT NOT NULL
    );
    CREATE INDEX logs_by_function ON logs(function, id);
    CREATE TABLE invocations (
        id          INTEGER PRIMARY KEY,
        ts          REAL NOT NULL,
        function    TEXT NOT NULL,
        version     TEXT NOT NULL,
        status      INTEGER NOT NULL,
        duration    REAL NOT NULL,
        bytes_in    INTEGER NOT NULL,
        bytes_out   INTEGER NOT NULL,
        cold        INTEGER NOT NULL,
        call_id     TEXT NOT NULL
    );
    CREATE INDEX invocations_by_function ON invocations(function, ts);
    """,
    """
    ALTER TABLE versions ADD COLUMN mounts TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE functions ADD COLUMN scale_override TEXT;
    """,
    """
    CREATE TABLE tenants (
        name          TEXT PRIMARY KEY,
        token_hash    TEXT NOT NULL,
        max_instances INTEGER,
        max_memory    INTEGER,
        created_at    REAL NOT NULL,
        token_at      REAL NOT NULL
    );
    CREATE TABLE secrets (
        tenant      TEXT NOT NULL,
        name        TEXT NOT NULL,
        sealed      BLOB NOT NULL,
        revision    INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    """,
    """
    ALTER TABLE invocations ADD COLUMN method TEXT;
    ALTER TABLE invocations ADD COLUMN trace_id TEXT;
    ALTER TABLE invocations ADD COLUMN span_id TEXT;
    ALTER TABLE invocations ADD COLUMN parent_id TEXT;
    ALTER TABLE invocations ADD COLUMN upstream_id TEXT;
    ALTER TABLE invocations ADD COLUMN instance TEXT;
    ALTER TABLE invocations ADD COLUMN acquire_at REAL;
    ALTER TABLE invocations ADD COLUMN wait REAL;
    ALTER TABLE invocations ADD COLUMN upstream REAL;
    ALTER TABLE invocations ADD COLUMN pooled INTEGER NOT NULL DEFAULT 0;
    -- No index on invocations(trace_id): with every call traced it doubled the cost
    -- of writing an invocation record (a random 32-character key per row); looking
    -- a trace up scans the records instead (plat trace, the dashboard: not hot).
    ALTER TABLE logs ADD COLUMN trace_id TEXT;
    CREATE INDEX logs_by_trace ON logs(trace_id) WHERE trace_id IS NOT NULL;
    CREATE TABLE spans (
        id          INTEGER PRIMARY KEY,
        function    TEXT NOT NULL,
        instance    TEXT NOT NULL,
        trace_id    TEXT NOT NULL,
        span_id     TEXT NOT NULL,
        parent_id   TEXT,
        name        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        start_ts    REAL NOT NULL,
        end_ts      REAL NOT NULL,
        error       INTEGER NOT NULL,
        status      TEXT NOT NULL,
        attributes  TEXT NOT NULL
    );
    CREATE INDEX spans_by_trace ON spans(trace_id);
    CREATE INDEX spans_by_function ON spans(function, id);
    """,
    """
    CREATE TABLE calls (
        id              TEXT PRIMARY KEY,
        function        TEXT NOT NULL,
        state           TEXT NOT NULL,
        trigger         TEXT NOT NULL,
        method          TEXT NOT NULL,
        target          TEXT NOT NULL,
        headers         TEXT NOT NULL,
        body            BLOB NOT NULL,
        callback_url    TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        budget          INTEGER NOT NULL,
        next_at         REAL NOT NULL,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        finished_at     REAL,
        status          INTEGER,
        duration        REAL,
        response_headers TEXT,
        response_body   BLOB,
        error           TEXT,
        callback_state  TEXT,
        callback_attempts INTEGER NOT NULL DEFAULT 0,
        callback_status INTEGER
    );
    CREATE INDEX calls_waiting ON calls(state, next_at) WHERE state IN ('queued', 'running');
    CREATE INDEX calls_by_function ON calls(function, created_at);
    CREATE INDEX calls_callbacks ON calls(callback_state) WHERE callback_state = 'pending';
    CREATE TABLE call_attempts (
        call_id     TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        duration    REAL,
        status      INTEGER,
        error       TEXT,
        PRIMARY KEY (call_id, attempt)
    );
    CREATE TABLE cron_ticks (
        function    TEXT NOT NULL,
        schedule    TEXT NOT NULL,
        last_tick   REAL NOT NULL,
        PRIMARY KEY (function, schedule)
    );
    """,
    """
    -- Git webhooks (plat.daemon.store.hooks).
    CREATE TABLE hooks (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        function    TEXT NOT NULL,
        repo        TEXT NOT NULL,
        branch      TEXT NOT NULL,
        path        TEXT NOT NULL,
        previews    INTEGER NOT NULL,
        preview_ttl REAL NOT NULL,
        secret      BLOB NOT NULL,
        created_at  REAL NOT NULL,
        UNIQUE (tenant, function)
    );
    CREATE TABLE hook_deliveries (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        hook        TEXT NOT NULL,
        delivery    TEXT NOT NULL,
        body_sha    TEXT NOT NULL,
        counted     INTEGER,
        provider    TEXT NOT NULL,
        event       TEXT NOT NULL,
        action      TEXT NOT NULL,
        branch      TEXT,
        sha         TEXT,
        ref         TEXT,
        target      TEXT,
        state       TEXT NOT NULL,
        preview_url TEXT,
        error       TEXT,
        log         TEXT NOT NULL DEFAULT '',
        origin      TEXT NOT NULL,
        received_at REAL NOT NULL,
        started_at  REAL,
        finished_at REAL
    );
    CREATE UNIQUE INDEX hook_delivery_ids ON hook_deliveries(hook, delivery) WHERE counted = 1;
    CREATE UNIQUE INDEX hook_delivery_bodies ON hook_deliveries(hook, body_sha) WHERE counted = 1;
    CREATE INDEX hook_deliveries_by_hook ON hook_deliveries(hook, seq);
    CREATE INDEX hook_deliveries_open ON hook_deliveries(state)
        WHERE state IN ('queued', 'fetching', 'building', 'deploying');
    CREATE TABLE hook_previews (
        function    TEXT PRIMARY KEY,
        hook        TEXT NOT NULL,
        branch      TEXT NOT NULL,
        expires_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    """,
    """
    -- The audit log (plat.daemon.audit): id is a row's place, seq the record's number.
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        seq         INTEGER NOT NULL,
        time        TEXT NOT NULL,
        actor       TEXT NOT NULL,
        origin      TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT NOT NULL,
        tenant      TEXT NOT NULL,
        params      TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        prev        TEXT NOT NULL,
        hash        TEXT NOT NULL
    );
    CREATE INDEX audit_by_tenant ON audit(tenant, id);
    """,
)
