-- 0005: the load history also records attempts that did not load (a sync whose source failed, or was unchanged)
-- and what each load changed, so that users and apps can follow a layer's versions.
--   status:  'loaded' (a new version went live), 'skipped' (the source was unchanged: nothing loaded),
--            'failed' (fetching or loading failed: the previous version stays; `reason` says why).
--   changes: counts of the load against the previous version, {added, removed, changed, changed_geometry,
--            changed_attributes, unchanged}; NULL for a layer's first load, a raster, or an attempt.
ALTER TABLE sdi.load_history
    ADD COLUMN status  text NOT NULL DEFAULT 'loaded' CHECK (status IN ('loaded', 'skipped', 'failed')),
    ADD COLUMN reason  text,
    ADD COLUMN changes jsonb;

-- The ids each load added, removed or changed (by primary key, as text); kept with their load-history row.
CREATE TABLE sdi.load_changes (
    load_id    bigint NOT NULL REFERENCES sdi.load_history (load_id) ON DELETE CASCADE,
    change     text   NOT NULL CHECK (change IN ('added', 'removed', 'changed')),
    feature_id text   NOT NULL,
    PRIMARY KEY (load_id, change, feature_id)
);
CREATE INDEX load_history_status_idx ON sdi.load_history (layer_id, status, finished_at DESC);
