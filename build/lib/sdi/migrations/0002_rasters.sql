-- 0002: raster layers in the registry.
-- sdi.layer gets a kind ('vector' by default, so existing rows and the vector loader's insert are unchanged).
-- Vector-only columns (table_name, geometry_type, primary_key) become nullable and are NULL for rasters;
-- rasters name their file instead: file_path is a Cloud Optimized GeoTIFF in EPSG:2326, relative to
-- SDI_DATA_DIR (for example 'rasters/<id>.tif'), and raster holds its metadata:
--   {"path", "width", "height", "band_count", "dtype", "nodata" (number, "NaN", "Infinity" or null),
--    "resolution": [x, y], "transform": [a, b, c, d, e, f], "overviews": [2, 4, ...], "blocksize",
--    "compression", "resampling", "bands": [{"band", "description", "valid_pixels", "min", "max"}]}
-- For rasters feature_count is the number of pixels per band (width x height); srid stays 2326.
ALTER TABLE sdi.layer
    ADD COLUMN kind      text NOT NULL DEFAULT 'vector' CHECK (kind IN ('vector', 'raster')),
    ADD COLUMN file_path text,
    ADD COLUMN raster    jsonb,
    ALTER COLUMN table_name    DROP NOT NULL,
    ALTER COLUMN geometry_type DROP NOT NULL,
    ALTER COLUMN primary_key   DROP NOT NULL;

ALTER TABLE sdi.layer ADD CONSTRAINT layer_kind_columns CHECK (
    CASE kind
        WHEN 'vector' THEN table_name IS NOT NULL AND geometry_type IS NOT NULL AND primary_key IS NOT NULL
        WHEN 'raster' THEN file_path IS NOT NULL AND jsonb_typeof(raster) = 'object'
            AND table_name IS NULL AND geometry_type IS NULL AND primary_key IS NULL
    END
);

CREATE INDEX layer_kind_idx ON sdi.layer (kind);
