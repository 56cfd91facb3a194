-- runwarden's database: the one definition, embedded in the binary and applied at start-up.
--
-- The file is a list of forward-only migrations. Each starts with a line `-- @version N`
-- (N = 1, 2, 3, … in order) and runs once, in its own transaction, on a database whose
-- `PRAGMA user_version` is below N; the runner then sets user_version to N. A released
-- section is never edited: a change to the schema is a new section at the end.
-- A database whose user_version is higher than the last section here was written by a newer
-- runwarden and is refused at start-up.

-- @version 1

-- One row per run ("session"). The primary key is what rejects a reused trace_id, under any
-- concurrency: the application never checks first.
CREATE TABLE runs (
    trace_id      TEXT    NOT NULL PRIMARY KEY CHECK (length(trace_id) = 36),
    -- the project of the API key that registered it ('default' in open mode)
    project       TEXT    NOT NULL CHECK (length(project) BETWEEN 1 AND 64),
    agent_id      TEXT    NOT NULL CHECK (length(agent_id) BETWEEN 1 AND 256),
    -- when the run started, exactly as the client sent it (validated RFC 3339 with a zone)
    started_at    TEXT    NOT NULL,
    -- the agent's instructions, verbatim
    system_prompt TEXT    NOT NULL,
    -- server receipt time, YYYY-MM-DDTHH:mm:ss.sssZ (UTC)
    received_at   TEXT    NOT NULL,
    -- the last sequence number handed to an event or check of this run (0: none yet)
    last_seq      INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
) STRICT;

-- Runs are listed newest first by rowid (insertion order), so no index on received_at.

-- One row per logged step. `seq` is the arrival order within the run, shared with checks so
-- that the run's history has one total order.
CREATE TABLE events (
    event_id       TEXT    NOT NULL PRIMARY KEY CHECK (length(event_id) = 36),
    trace_id       TEXT    NOT NULL REFERENCES runs (trace_id),
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    event_type     TEXT    NOT NULL CHECK (event_type IN
                       ('user', 'model_input', 'model_output', 'tool',
                        'environment', 'memory', 'system', 'error')),
    -- the event's own time, Unix seconds (client's clock)
    occurred_at    REAL    NOT NULL CHECK (occurred_at >= 0),
    -- server receipt time, Unix milliseconds
    received_at_ms INTEGER NOT NULL,
    -- `content` and `schema` exactly as sent: the string's value when sent as a string
    -- (form 'string'), the raw JSON text when sent as JSON (form 'json')
    content        TEXT    NOT NULL,
    content_form   TEXT    NOT NULL CHECK (content_form IN ('string', 'json')),
    schema         TEXT    NOT NULL,
    schema_form    TEXT    NOT NULL CHECK (schema_form IN ('string', 'json')),
    UNIQUE (trace_id, seq)
) STRICT;

-- One row per action check, with its verdict.
CREATE TABLE checks (
    check_id       TEXT    NOT NULL PRIMARY KEY CHECK (length(check_id) = 36),
    trace_id       TEXT    NOT NULL REFERENCES runs (trace_id),
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    tool_name      TEXT    NOT NULL,
    occurred_at    REAL    NOT NULL CHECK (occurred_at >= 0),
    received_at_ms INTEGER NOT NULL,
    content        TEXT    NOT NULL,
    content_form   TEXT    NOT NULL CHECK (content_form IN ('string', 'json')),
    schema         TEXT    NOT NULL,
    schema_form    TEXT    NOT NULL CHECK (schema_form IN ('string', 'json')),
    is_safe        INTEGER NOT NULL CHECK (is_safe IN (0, 1)),
    reasoning      TEXT    NOT NULL CHECK (reasoning <> ''),
    -- the findings as a JSON array of {rule, severity, message, evidence}
    findings       TEXT    NOT NULL CHECK (json_valid(findings)),
    -- 1 when the action passed only thanks to a logged approval, which it used up
    consumed_approval INTEGER NOT NULL DEFAULT 0 CHECK (consumed_approval IN (0, 1)),
    UNIQUE (trace_id, seq)
) STRICT;

-- API keys. Only a SHA-256 of each key is stored; requests are matched by that hash.
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    project      TEXT    NOT NULL CHECK (length(project) BETWEEN 1 AND 64),
    key_type     TEXT    NOT NULL CHECK (key_type IN
                     ('development', 'production', 'restricted', 'admin')),
    name         TEXT,
    secret_hash  BLOB    NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    -- per-key overrides of the type's limits (NULL: the type's default)
    rpm          INTEGER CHECK (rpm > 0),
    rph          INTEGER CHECK (rph > 0),
    created_at   TEXT    NOT NULL,
    -- updated at most once a minute per key
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

-- Answers remembered for `Idempotency-Key` retries, written in the same transaction as the
-- write they answer. Rows older than the retention (24 h by default) are ignored and purged.
CREATE TABLE idempotency (
    project       TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    -- SHA-256 of the route and the request body
    request_hash  BLOB    NOT NULL CHECK (length(request_hash) = 32),
    status        INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (project, idem_key)
) STRICT;
