#!/usr/bin/env bash
# HK SDI set-up: PostGIS, a running PostgreSQL server, a role for this user, the database,
# the virtual environment and the database schema. Safe to re-run: every step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
DB_NAME=${SDI_DB_NAME:-sdi}
ME=$(id -un)

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}

# 1. PostgreSQL and PostGIS (Debian packages) ---------------------------------------------
command -v pg_lsclusters >/dev/null || die "PostgreSQL is not installed: apt-get install postgresql"
read -r PG_VERSION PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters --no-header | head -n1) \
    || die "no PostgreSQL cluster found: pg_createcluster <version> main"
if [ ! -f "/usr/share/postgresql/${PG_VERSION}/extension/postgis.control" ]; then
    [ "$(id -u)" -eq 0 ] || die "PostGIS is missing: run 'sudo apt-get install postgresql-${PG_VERSION}-postgis-3'"
    say "installing PostGIS for PostgreSQL ${PG_VERSION}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-${PG_VERSION}-postgis-3" >/dev/null
fi
if ! command -v ogr2ogr >/dev/null && [ "$(id -u)" -eq 0 ]; then
    # only the load benchmark uses it (sdi itself reads through pyogrio's bundled GDAL)
    say "installing gdal-bin (ogr2ogr, for benchmarks/load_bench.py)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdal-bin >/dev/null || say "gdal-bin not installed"
fi
if [ ! -x /usr/bin/time ] && [ "$(id -u)" -eq 0 ]; then
    # the load benchmark measures each tool's peak memory with GNU time (a small parent: see load_bench.py)
    say "installing time (GNU time, for benchmarks/load_bench.py)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null || say "time not installed"
fi

# Headless Chromium for the browser tests of the HTML pages (tests/publishing/test_pages.py).
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing chromium (browser tests of the HTML pages)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || say "chromium not installed: the browser tests of the HTML pages will be skipped"
    else
        say "chromium is not installed: the browser tests of the HTML pages will be skipped (as root: apt-get install -y chromium)"
    fi
fi

# A CJK font, so that headless Chromium draws the Chinese pages' glyphs instead of empty boxes (the browser tests
# check that it does: tests/browser.py assert_cjk_renders).
if ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing fonts-noto-cjk (Chinese glyphs in the browser tests of the HTML pages)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null; } \
            || say "fonts-noto-cjk not installed: the browser tests of the Chinese pages will fail"
    else
        say "no CJK font: the browser tests of the Chinese pages will fail (as root: apt-get install -y fonts-noto-cjk)"
    fi
fi

# MapServer (mapserv as a CGI program) for the WFS harvesting tests against a real server (tests/harvest/test_wfs.py).
if ! command -v mapserv >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing MapServer (the WFS harvesting tests run it as a real WFS 2.0 server)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cgi-mapserver mapserver-bin >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cgi-mapserver mapserver-bin >/dev/null; } \
            || say "MapServer not installed: the WFS harvesting tests will be skipped"
    else
        say "MapServer is not installed: the WFS harvesting tests will be skipped (as root: apt-get install -y cgi-mapserver mapserver-bin)"
    fi
fi

# 2. a running server ------------------------------------------------------------------------
if [ "$PG_STATUS" != "online" ]; then
    say "starting PostgreSQL cluster ${PG_VERSION} ${PG_CLUSTER}"
    if [ "$(id -u)" -eq 0 ]; then pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
    else as_postgres pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start; fi
fi
for _ in $(seq 1 30); do pg_isready -q -p "$PG_PORT" && break; sleep 1; done
pg_isready -q -p "$PG_PORT" || die "PostgreSQL on port ${PG_PORT} did not come up"

# 3. a role for this user (superuser: it creates the sdi roles and test databases) -----------
if ! as_postgres psql -p "$PG_PORT" -tAc "select 1 from pg_roles where rolname = '${ME}'" | grep -q 1; then
    say "creating PostgreSQL role ${ME}"
    as_postgres createuser -p "$PG_PORT" --superuser "$ME"
fi

# 4. the database ----------------------------------------------------------------------------
if ! psql -p "$PG_PORT" -d postgres -tAc "select 1 from pg_database where datname = '${DB_NAME}'" | grep -q 1; then
    say "creating database ${DB_NAME}"
    createdb -p "$PG_PORT" "$DB_NAME"
fi

# 5. the virtual environment (re-installed only when pyproject.toml changes) -----------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.sdi-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    say "installing hk-sdi into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$STAMP"
fi

# 6. schema (extensions, schemas, roles, migrations) -----------------------------------------
.venv/bin/sdi db init --quiet
say "ready: PostgreSQL ${PG_VERSION} on port ${PG_PORT}, database ${DB_NAME}, .venv"
