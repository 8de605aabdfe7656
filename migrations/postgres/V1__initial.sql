-- ringwatch on PostgreSQL, schema version 1. Applied by `refinery` under an advisory lock
-- (src/store/postgres/migrate.rs). Timestamps are bigint Unix milliseconds, like
-- model::UnixMillis and the SQLite schema: no conversion on the write path, partition bounds
-- computed in Rust without time zones. docs/storage.md explains every table.

-- The service registry: the same columns and semantics as SQLite's.
CREATE TABLE services (
    id          bigint PRIMARY KEY,        -- ServiceId: FNV-1a of the name, 63 bits
    name        text   NOT NULL UNIQUE,
    url         text   NOT NULL,
    source      text   NOT NULL,           -- 'config' | 'api'
    spec        text   NOT NULL,           -- JSON of the user-visible definition
    created_at  bigint,
    updated_at  bigint,
    deleted_at  bigint
);

-- Append-only probe results, one partition per UTC day of scheduled_at (results_YYYYMMDD,
-- created ahead by the writer). Retention drops whole partitions. The primary key is the
-- idempotency key (a retried or redelivered batch inserts nothing) and serves a service's
-- history newest first.
CREATE TABLE results (
    service_id    bigint  NOT NULL,
    scheduled_at  bigint  NOT NULL,
    started_at    bigint  NOT NULL,
    latency_us    bigint  NOT NULL,
    connect_us    bigint,                  -- 0 = phase skipped
    tls_us        bigint,
    first_byte_us bigint,
    status_code   integer,
    bytes         bigint  NOT NULL,
    error_kind    text,                    -- NULL on success
    error         text,
    PRIMARY KEY (service_id, scheduled_at)
) PARTITION BY RANGE (scheduled_at);

-- Status transitions with the global, gap-free seq.
CREATE TABLE transitions (
    seq          bigint PRIMARY KEY,
    service_id   bigint NOT NULL,
    service      text   NOT NULL,
    from_status  text   NOT NULL,          -- 'unknown' | 'up' | 'down'
    to_status    text   NOT NULL,
    at           bigint NOT NULL,
    latency_us   bigint,
    status_code  integer,
    error        text
);
CREATE INDEX transitions_service_seq ON transitions (service_id, seq);
CREATE INDEX transitions_at ON transitions (at);

-- Per-service state for cluster mode's ingest processes, which apply the state machine in
-- their transaction (locking these rows). Standalone keeps state on the shards instead.
CREATE TABLE service_state (
    service_id         bigint  PRIMARY KEY,
    status             text    NOT NULL,   -- 'unknown' | 'up' | 'down'
    since              bigint  NOT NULL,
    ok_run             integer NOT NULL DEFAULT 0,
    fail_run           integer NOT NULL DEFAULT 0,
    last_scheduled_at  bigint,             -- ordering guard: older results do not move state
    last_seq           bigint,
    updated_at         bigint  NOT NULL
);

-- The last transition seq handed out. Cluster ingest numbers transitions from it inside its
-- transaction (gap-free, in commit order); standalone's writer keeps it at MAX(seq).
CREATE TABLE seq_counter (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq  bigint  NOT NULL
);
INSERT INTO seq_counter (id, last_seq) VALUES (true, 0);
