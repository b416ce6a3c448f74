-- 0003: the catalogue. Each sdi.layer row is the layer's catalogue record, written in the same
-- transaction as its data; these columns add what discovery and metadata export need.
ALTER TABLE sdi.layer
    ADD COLUMN keywords_en     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN keywords_zh     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN theme           text,
    ADD COLUMN attribution     text,
    ADD COLUMN update_frequency text NOT NULL DEFAULT 'notPlanned',
    ADD COLUMN extent_crs84    geometry(Polygon, 4326),
    ADD COLUMN temporal_start  timestamptz,
    ADD COLUMN temporal_end    timestamptz,
    ADD COLUMN lineage         jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN links           jsonb NOT NULL DEFAULT '[]';

-- array_to_string is only STABLE (element output functions could depend on settings); for text[] it is
-- immutable in fact, and generated columns need that promise.
CREATE FUNCTION sdi.text_join(text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string($1, ' ');

-- English full text (stemmed: "zones" finds "zoning"); weights: title A, keywords B, abstract C, the rest D.
ALTER TABLE sdi.layer ADD COLUMN search_en tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', coalesce(title_en, '')), 'A') ||
    setweight(to_tsvector('english', coalesce(sdi.text_join(keywords_en), '')), 'B') ||
    setweight(to_tsvector('english', coalesce(abstract_en, '')), 'C') ||
    setweight(to_tsvector('english', coalesce(custodian, '') || ' ' || id), 'D')
) STORED;

-- Everything searchable as plain text, for trigram similarity (typos) and Chinese n-gram matching
-- (PostgreSQL's parser does not segment Chinese).
ALTER TABLE sdi.layer ADD COLUMN search_text text GENERATED ALWAYS AS (
    lower(coalesce(title_en, '') || ' ' || coalesce(title_zh, '') || ' ' || sdi.text_join(keywords_en) || ' '
          || sdi.text_join(keywords_zh) || ' ' || coalesce(custodian, '') || ' ' || id || ' '
          || coalesce(abstract_en, '') || ' ' || coalesce(abstract_zh, ''))
) STORED;

CREATE INDEX layer_search_en_idx ON sdi.layer USING gin (search_en);
CREATE INDEX layer_search_text_idx ON sdi.layer USING gin (search_text gin_trgm_ops);
CREATE INDEX layer_extent_crs84_idx ON sdi.layer USING gist (extent_crs84);
