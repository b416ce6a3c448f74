-- 0006: harvesting (`sdi sync`). Per layer whose source is a URL: what the source answered when the live version
-- was fetched, so that the next sync can ask with a conditional GET and tell an unchanged source.
--   source_key:    SHA-256 of the source's URL and service parameters (a changed source.url starts afresh;
--                  the URL itself, which may hold a token, is not stored here)
--   etag, last_modified: the validators of that answer (service: file), sent as If-None-Match/If-Modified-Since
--   sha256:        SHA-256 of the file the loader read (also in that load's sdi.load_history.source_sha256)
--   load_id:       the load made from those bytes; validators are used only while it is the live load
CREATE TABLE sdi.sync_state (
    layer_id       text PRIMARY KEY,
    source_key     text NOT NULL,
    etag           text,
    last_modified  text,
    sha256         text NOT NULL,
    load_id        bigint NOT NULL,
    checked_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
