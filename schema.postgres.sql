-- runwarden's database on PostgreSQL: the same tables and constraints as schema.sql (read that
-- file for what each column means), in PostgreSQL's dialect. Embedded in the binary and applied
-- at start-up by every instance, under an advisory lock so that instances starting together
-- migrate once.
--
-- The same forward-only scheme as schema.sql: sections start with `-- @version N` and each runs
-- once, in one transaction with the row it adds to `runwarden_schema`. A released section is
-- never edited. A database whose version is higher than the last section here was written by a
-- newer runwarden and is refused at start-up.
--
-- Differences from SQLite, and why:
-- * `key` columns (identity) order the run and check lists, as SQLite's rowid does.
-- * Free text that may hold a NUL character (the system prompt, tool names, reasoning that
--   quotes arguments) is BYTEA holding UTF-8: PostgreSQL's TEXT cannot store NUL, and a
--   prompt with one must not turn into an error. JSON text never holds a raw NUL, so
--   `content`, `schema` and `findings` stay TEXT.
-- * Rate-limit counters live in a table (`rate_limits`): several instances count together.

-- @version 1

CREATE TABLE runs (
    trace_id      TEXT    NOT NULL PRIMARY KEY CHECK (length(trace_id) = 36),
    key           BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    project       TEXT    NOT NULL CHECK (length(project) BETWEEN 1 AND 64),
    agent_id      TEXT    NOT NULL CHECK (length(agent_id) BETWEEN 1 AND 256),
    started_at    TEXT    NOT NULL,
    system_prompt BYTEA   NOT NULL,
    received_at   TEXT    NOT NULL,
    last_seq      BIGINT  NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);
CREATE INDEX runs_by_project ON runs (project, key);

CREATE TABLE events (
    event_id       TEXT    NOT NULL PRIMARY KEY CHECK (length(event_id) = 36),
    trace_id       TEXT    NOT NULL REFERENCES runs (trace_id),
    seq            BIGINT  NOT NULL CHECK (seq >= 1),
    event_type     TEXT    NOT NULL CHECK (event_type IN
                       ('user', 'model_input', 'model_output', 'tool',
                        'environment', 'memory', 'system', 'error')),
    occurred_at    DOUBLE PRECISION NOT NULL CHECK (occurred_at >= 0),
    received_at_ms BIGINT  NOT NULL,
    content        TEXT    NOT NULL,
    content_form   TEXT    NOT NULL CHECK (content_form IN ('string', 'json')),
    schema         TEXT    NOT NULL,
    schema_form    TEXT    NOT NULL CHECK (schema_form IN ('string', 'json')),
    UNIQUE (trace_id, seq)
);

CREATE TABLE checks (
    check_id       TEXT    NOT NULL PRIMARY KEY CHECK (length(check_id) = 36),
    key            BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    trace_id       TEXT    NOT NULL REFERENCES runs (trace_id),
    seq            BIGINT  NOT NULL CHECK (seq >= 1),
    tool_name      BYTEA   NOT NULL,
    occurred_at    DOUBLE PRECISION NOT NULL CHECK (occurred_at >= 0),
    received_at_ms BIGINT  NOT NULL,
    content        TEXT    NOT NULL,
    content_form   TEXT    NOT NULL CHECK (content_form IN ('string', 'json')),
    schema         TEXT    NOT NULL,
    schema_form    TEXT    NOT NULL CHECK (schema_form IN ('string', 'json')),
    is_safe        BOOLEAN NOT NULL,
    reasoning      BYTEA   NOT NULL CHECK (length(reasoning) > 0),
    findings       TEXT    NOT NULL CHECK (findings::jsonb IS NOT NULL),
    consumed_approval BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (trace_id, seq)
);

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    project      TEXT    NOT NULL CHECK (length(project) BETWEEN 1 AND 64),
    key_type     TEXT    NOT NULL CHECK (key_type IN
                     ('development', 'production', 'restricted', 'admin')),
    name         TEXT,
    secret_hash  BYTEA   NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    rpm          INTEGER CHECK (rpm > 0),
    rph          INTEGER CHECK (rph > 0),
    created_at   TEXT    NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

CREATE TABLE idempotency (
    project       TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    request_hash  BYTEA   NOT NULL CHECK (length(request_hash) = 32),
    status        INTEGER NOT NULL,
    body          BYTEA   NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (project, idem_key)
);

-- Per-key request counters of the current one-minute and one-hour windows (see ratelimit.rs),
-- shared by every instance. Rows of keys idle for over an hour are purged.
CREATE TABLE rate_limits (
    key_id       TEXT    NOT NULL PRIMARY KEY,
    minute_index BIGINT  NOT NULL DEFAULT 0,
    minute_count INTEGER NOT NULL DEFAULT 0,
    hour_index   BIGINT  NOT NULL DEFAULT 0,
    hour_count   INTEGER NOT NULL DEFAULT 0,
    -- whether the latest request counted was allowed (returned by the counting statement)
    last_allowed BOOLEAN NOT NULL DEFAULT true
);
