-- 0001: schemas for the catalogue registry and load history (schema sdi) and published layers (schema layers).
CREATE SCHEMA IF NOT EXISTS sdi;
CREATE SCHEMA IF NOT EXISTS layers;

-- One row per loaded layer: what is live in layers.<id> now. Updated in the same transaction as the data.
CREATE TABLE sdi.layer (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{0,62}$'),
    table_name     text NOT NULL,
    title_en       text NOT NULL,
    title_zh       text,
    abstract_en    text,
    abstract_zh    text,
    custodian      text NOT NULL,
    licence        text NOT NULL,
    geometry_type  text NOT NULL,
    srid           integer NOT NULL CHECK (srid = 2326),
    primary_key    text NOT NULL,
    feature_count  bigint NOT NULL,
    extent         geometry(Polygon, 2326),
    fields         jsonb NOT NULL DEFAULT '[]',
    synthetic      boolean NOT NULL DEFAULT false,
    definition     jsonb NOT NULL,
    load_id        bigint NOT NULL,
    loaded_at      timestamptz NOT NULL
);

-- One row per successful load; failed loads roll back and leave no trace in the database.
CREATE TABLE sdi.load_history (
    load_id           bigserial PRIMARY KEY,
    layer_id          text NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    source_path       text NOT NULL,
    source_sha256     text NOT NULL,
    source_crs        text NOT NULL,
    transformation    text,
    loader_version    text NOT NULL,
    features_read     bigint NOT NULL,
    features_written  bigint NOT NULL,
    report            jsonb NOT NULL
);
CREATE INDEX load_history_layer_idx ON sdi.load_history (layer_id, finished_at DESC);
