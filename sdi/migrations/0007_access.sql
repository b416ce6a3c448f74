-- 0007: restricted layers. A layer is public (access_groups NULL) or readable only by the listed groups; the API
-- runs each request's queries under a database role that holds exactly the identity's groups, so PostgreSQL
-- refuses what the web layer would wrongly allow:
--   sdi_anon          (NOLOGIN) the public: reads the public layer tables; row-level security below hides the
--                     catalogue rows, history and changes of restricted layers from it
--   sdi_g_<group>     (NOLOGIN) one per group, a member of sdi_anon, granted SELECT on its group's layer tables
--   sdi_c_<md5>       (NOLOGIN) an identity of several groups: a member of each sdi_g_<group>
-- The API's login role (SDI_READER_ROLE) is NOINHERIT: it reads the catalogue (the registry of all layers) and
-- may SET ROLE to any of these, but reads no layer table as itself. Roles are made on demand by
-- sdi.access_role(), the only code that creates roles, owned by sdi_rolemaker (CREATEROLE, NOLOGIN).
-- The owner (SDI_OWNER_ROLE; what sdi.connect() and the loaders use) owns the tables and so bypasses RLS.

ALTER TABLE sdi.layer ADD COLUMN access_groups text[]
    CHECK (access_groups IS NULL OR (cardinality(access_groups) BETWEEN 1 AND 64
           AND array_to_string(access_groups, ',') ~ '^[a-z][a-z0-9_]{0,39}(,[a-z][a-z0-9_]{0,39})*$'));

-- The reader role sdi.access_role() grants new roles to (written by sdi.db from the settings).
CREATE TABLE sdi.access_config (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    reader_role text NOT NULL
);

-- API keys: "sdi_<id>_<secret>"; only the SHA-256 of the secret is kept (the secret is 256 random bits).
CREATE TABLE sdi.api_key (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{10}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    groups        text[] NOT NULL DEFAULT '{}'
                  CHECK (array_to_string(groups, ',') ~ '^([a-z][a-z0-9_]{0,39}(,[a-z][a-z0-9_]{0,39})*)?$'),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    rate_limit    integer CHECK (rate_limit > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT session_user,
    revoked_at    timestamptz
);

-- Every read of a restricted layer: who, what, when, how many features.
CREATE TABLE sdi.access_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL,
    identity  text NOT NULL,
    name      text NOT NULL,
    groups    text[] NOT NULL,
    layer_id  text NOT NULL,
    action    text NOT NULL,
    path      text NOT NULL,
    features  bigint,
    status    smallint NOT NULL
);
CREATE INDEX access_log_layer_idx ON sdi.access_log (layer_id, at DESC);
CREATE INDEX access_log_at_idx ON sdi.access_log (at DESC);

-- The groups whose role the current role has the privileges of.
CREATE FUNCTION sdi.my_groups() RETURNS text[] LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN array(SELECT substr(rolname, 7) FROM pg_roles
                 WHERE rolname LIKE 'sdi\_g\_%' AND pg_has_role(current_user, oid, 'USAGE'));

-- The role an identity with `groups` reads as (made, with its memberships, when missing):
-- no group -> sdi_anon; one -> sdi_g_<group>; several -> sdi_c_<md5 of the sorted list>.
CREATE FUNCTION sdi.access_role(groups text[]) RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted text[];
    g text;
    member text;
    combined text;
    reader text;
BEGIN
    SELECT c.reader_role INTO reader FROM sdi.access_config c;
    IF reader IS NULL THEN
        RAISE EXCEPTION 'sdi.access_config has no reader role; run sdi db init' USING ERRCODE = '55000';
    END IF;
    SELECT array_agg(DISTINCT x ORDER BY x) INTO wanted FROM unnest(groups) AS x WHERE x IS NOT NULL;
    IF wanted IS NULL THEN
        RETURN 'sdi_anon';
    END IF;
    IF cardinality(wanted) > 64 THEN
        RAISE EXCEPTION 'at most 64 groups' USING ERRCODE = '22023';
    END IF;
    FOREACH g IN ARRAY wanted LOOP
        IF g !~ '^[a-z][a-z0-9_]{0,39}$' THEN
            RAISE EXCEPTION 'invalid group name %', quote_literal(left(g, 50)) USING ERRCODE = '22023';
        END IF;
        member := 'sdi_g_' || g;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = member) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', member);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made meanwhile by another session
            END;
        END IF;
        IF NOT pg_has_role(member, 'sdi_anon', 'MEMBER') THEN
            EXECUTE format('GRANT sdi_anon TO %I', member);
        END IF;
        IF NOT pg_has_role(reader, member, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', member, reader);
        END IF;
    END LOOP;
    IF cardinality(wanted) = 1 THEN
        RETURN 'sdi_g_' || wanted[1];
    END IF;
    combined := 'sdi_c_' || md5(array_to_string(wanted, ','));
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = combined) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', combined);
            EXECUTE format('COMMENT ON ROLE %I IS %L', combined, 'HK SDI identity of groups ' || array_to_string(wanted, ', '));
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    FOREACH g IN ARRAY wanted LOOP
        IF NOT pg_has_role(combined, 'sdi_g_' || g, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', 'sdi_g_' || g, combined);
        END IF;
    END LOOP;
    IF NOT pg_has_role(reader, combined, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', combined, reader);
    END IF;
    RETURN combined;
END
$$;
REVOKE ALL ON FUNCTION sdi.access_role(text[]) FROM PUBLIC;
ALTER FUNCTION sdi.access_role(text[]) OWNER TO sdi_rolemaker;

-- Row-level security: the public and the groups see the catalogue rows (and their history) they may read;
-- the reader role itself (the API's registry) sees every row; the owner bypasses RLS.
ALTER TABLE sdi.layer ENABLE ROW LEVEL SECURITY;
CREATE POLICY layer_visible ON sdi.layer FOR SELECT TO sdi_anon
    USING (access_groups IS NULL OR access_groups && (SELECT sdi.my_groups()));

ALTER TABLE sdi.load_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY load_history_visible ON sdi.load_history FOR SELECT TO sdi_anon
    USING (EXISTS (SELECT 1 FROM sdi.layer l WHERE l.id = layer_id));

ALTER TABLE sdi.load_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY load_changes_visible ON sdi.load_changes FOR SELECT TO sdi_anon
    USING (EXISTS (SELECT 1 FROM sdi.load_history h WHERE h.load_id = load_changes.load_id));

ALTER TABLE sdi.jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_any ON sdi.jobs TO sdi_anon USING (true) WITH CHECK (true);

-- A job belongs to the identity that started it (sdi.access.identity.Identity.id); others get 404.
ALTER TABLE sdi.jobs ADD COLUMN owner text NOT NULL DEFAULT 'anonymous';
CREATE INDEX jobs_owner_idx ON sdi.jobs (owner, created DESC);
