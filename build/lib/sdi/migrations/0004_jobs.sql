-- 0004: jobs of the OGC API – Processes endpoint, kept by pygeoapi's PostgreSQL process manager
-- (sdi.publishing.jobs.SdiJobManager, a subclass of pygeoapi.process.manager.postgresql.PostgreSQLManager).
-- The manager reflects this table and writes the keys of pygeoapi's job metadata as columns: every
-- execution (synchronous ones too) inserts a row 'accepted', then updates it to 'running' and
-- 'successful' or 'failed'. Timestamps arrive as UTC strings ('2026-01-01T00:00:00.000000Z').
-- `location` is the file the result was written to (below SDI_DATA_DIR/jobs), NULL for failed jobs.
-- The API's read-only role may insert, update and delete rows here (sdi.db grants it); nothing else.
CREATE TABLE sdi.jobs (
    identifier text PRIMARY KEY,
    type       text NOT NULL DEFAULT 'process',
    process_id text NOT NULL,
    created    timestamptz,
    started    timestamptz,
    updated    timestamptz,
    finished   timestamptz,
    status     text NOT NULL CHECK (status IN ('accepted', 'running', 'successful', 'failed', 'dismissed')),
    location   text,
    mimetype   text,
    message    text,
    progress   integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    parameters jsonb
);

CREATE INDEX jobs_started_idx ON sdi.jobs (started DESC);
