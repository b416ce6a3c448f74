"""Correctness checks of the API benchmark: ground truth from PostGIS, then each server's answers against it.

For every bbox the truth is counted in PostGIS in lon/lat (``st_intersects(st_transform(geom, 4326),
st_makeenvelope(..., 4326))``), with its first page by id; for the tile, the ids of the features that
intersect the tile's envelope in EPSG:3857. Each server's page, item and tile are compared with the
truth (the verdict that gates sdi's PASS) and sdi's with TiPg's (printed beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mapbox_vector_tile
import psycopg
import requests
import shapely
from _api_bench_servers import CONNECT_TIMEOUT_S, LAYER
from shapely.geometry import shape

TOLERANCE_DEG = 1e-6  #: coordinates of the same vertex may differ by this much (sdi writes 1 cm precision)
TILE_TOLERANCE = 4.0  #: tile units (of 4096; 16 per screen pixel) two tiles' geometries may differ by: a quarter pixel
#: (snapping keeps or drops a vertex differently when a coordinate lands one unit apart)
LIMIT = 100
Feature = tuple[str, list[float]]  #: id, flattened coordinates


@dataclass
class Verdict:
    """``ok`` and a short text saying what was compared or what differs."""

    ok: bool
    text: str

    def __str__(self) -> str:
        return ("ok: " if self.ok else "FAIL: ") + self.text

    def shown(self, server: str) -> str:
        """As printed for ``server``: another server's differences from PostGIS are shown, not failures."""
        return str(self) if self.ok or server == "sdi" else f"differs from PostGIS: {self.text}"


@dataclass
class Truth:
    """What PostGIS says the answers are."""

    count: dict[str, int] = field(default_factory=dict)  #: box key → number of polygons intersecting it
    inside: dict[str, set[str]] = field(default_factory=dict)  #: box key → their ids
    page: dict[str, list[Feature]] = field(default_factory=dict)  #: box key → first LIMIT by id, lon/lat
    item: tuple[str, list[float], dict[str, Any]] = ("", [], {})  #: id, coordinates, properties
    tile_ids: set[str] = field(default_factory=set)  #: ids of the features intersecting the tile


@dataclass
class Checked:
    """The answers of the servers checked before the load."""

    urls: dict[str, dict[str, str]] = field(default_factory=dict)  #: server → endpoint → URL answering 200
    verdicts: dict[str, dict[str, Verdict]] = field(default_factory=dict)  #: endpoint → server → vs truth
    same: dict[str, Verdict] = field(default_factory=dict)  #: endpoint → sdi's answer vs TiPg's
    matched: dict[str, dict[str, int | None]] = field(default_factory=dict)  #: box key → server → numberMatched
    tiles: dict[str, bytes] = field(default_factory=dict)  #: server → tile
    notes: list[str] = field(default_factory=list)


def flat(coords: Any) -> list[float]:
    """Nested coordinate arrays as one list of numbers."""
    if isinstance(coords, (int, float)):
        return [float(coords)]
    return [v for c in coords for v in flat(c)]


# --- ground truth ------------------------------------------------------------------------------------------------


def ground_truth(owner_url: str, boxes: dict[str, tuple[float, float, float, float]],
                 tile: tuple[int, int, int], item_box: str) -> Truth:
    """Counts, pages, the item (middle of ``item_box``'s page) and the tile's ids, from PostGIS (as the owner)."""
    truth = Truth()
    table = f"layers.{LAYER}"
    with psycopg.connect(owner_url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        for key, (x0, y0, x1, y1) in boxes.items():
            where = f"st_intersects(st_transform(geom, 4326), st_makeenvelope({x0}, {y0}, {x1}, {y1}, 4326))"
            row = conn.execute(f"select count(*) from {table} where {where}").fetchone()
            truth.count[key] = int(row[0]) if row else -1
            ids = [str(r[0]) for r in conn.execute(f"select fid from {table} where {where} order by fid")]
            if len(ids) != truth.count[key]:
                raise RuntimeError(f"PostGIS counted {truth.count[key]} in box {key} but listed {len(ids)}")
            truth.inside[key] = set(ids)
            rows = conn.execute(f"select fid, st_asgeojson(st_transform(geom, 4326), 9)::json -> 'coordinates' "
                                f"from {table} where {where} order by fid limit {LIMIT}").fetchall()
            truth.page[key] = [(str(fid), flat(coords)) for fid, coords in rows]
        page = truth.page[item_box]
        fid = page[len(page) // 2][0] if page else "1"
        row = conn.execute(f"select st_asgeojson(st_transform(geom, 4326), 9)::json -> 'coordinates', "
                           f"to_jsonb(t) - 'geom' from {table} as t where fid = %s", (int(fid),)).fetchone()
        if row is None:
            raise RuntimeError(f"feature {fid} is missing")
        truth.item = (fid, flat(row[0]), dict(row[1]))
        z, x, y = tile
        truth.tile_ids = {str(r[0]) for r in conn.execute(
            f"select fid from {table} where st_intersects(st_transform(geom, 3857), st_tileenvelope(%s, %s, %s))",
            (z, x, y))}
    return truth


# --- comparisons -------------------------------------------------------------------------------------------------


def features_of(body: dict[str, Any]) -> list[Feature]:
    """(id, coordinates) of a FeatureCollection's features, or of one Feature."""
    found = (body.get("features") or []) if body.get("type") == "FeatureCollection" else [body]
    return [(str(f.get("id")), flat((f.get("geometry") or {}).get("coordinates") or [])) for f in found]


def compare(ref: list[Feature], got: list[Feature], inside: set[str] | None = None) -> Verdict:
    """Same ids in the same order, same vertex counts, coordinates within :data:`TOLERANCE_DEG`.

    ``inside``: ids that the truth puts inside the box, to say whether the extra ids of ``got`` are outside it.
    """
    if not got:
        return Verdict(False, "no features")
    ref_ids, got_ids = [f for f, _ in ref], [f for f, _ in got]
    problems = []
    if set(ref_ids) != set(got_ids):
        extra = [f for f in got_ids if f not in set(ref_ids)]
        why = ""
        if inside is not None and extra:
            out = sum(f not in inside for f in extra)
            why = f"; {out} of the {len(extra)} extra ids are outside the box (PostGIS)"
        problems.append(f"ids differ: {len(set(ref_ids) & set(got_ids))}/{len(ref_ids)} shared, "
                        f"{len(got_ids)} returned{why}")
    elif ref_ids != got_ids:
        problems.append("same ids, different order")
    theirs = dict(got)
    worst = 0.0
    for fid, coords in ref:
        other = theirs.get(fid)
        if other is None:
            continue
        if len(other) != len(coords):
            problems.append(f"feature {fid} has {len(other) // 2} vertices, not {len(coords) // 2}")
            break
        worst = max(worst, max((abs(a - b) for a, b in zip(coords, other, strict=True)), default=0.0))
    if worst > TOLERANCE_DEG:
        problems.append(f"coordinates off by up to {worst:.2g}° (~{worst * 111_000:,.1f} m)")
    if problems:
        return Verdict(False, "; ".join(problems))
    ids = f"{len(ref_ids)} ids, same order" if len(ref_ids) != 1 else "same id"
    return Verdict(True, f"{ids}, coordinates within {max(worst, 1e-12):.0e}°")


def _fetch(session: requests.Session, candidates: list[str]) -> tuple[str, requests.Response | None, str]:
    """The first candidate URL answering 200, its response, and ``""``; else the first URL, None, the problem."""
    problem = ""
    for url in candidates:
        try:
            response = session.get(url, timeout=120)
        except requests.RequestException as exc:
            problem = problem or f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code == 200:
            return url, response, ""
        problem = problem or f"HTTP {response.status_code}: {response.text[:200]}"
    return candidates[0], None, problem


def _json(response: requests.Response | None) -> dict[str, Any] | None:
    try:
        body = response.json() if response is not None else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _properties_differ(truth: dict[str, Any], got: dict[str, Any]) -> list[str]:
    out = []
    for key, value in truth.items():
        if key not in got:
            continue
        other = got[key]
        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
            same = abs(float(value) - float(other)) <= 1e-9 * max(1.0, abs(float(value)))
        else:
            same = str(value) == str(other)
        if not same:
            out.append(f"{key}: {other!r} ≠ {value!r}")
    return out


# --- tiles -------------------------------------------------------------------------------------------------------


@dataclass
class TileContent:
    """A decoded tile: layer names and, per feature id, its geometry (tile units) and properties."""

    layers: list[str]
    geoms: dict[str, Any]
    props: dict[str, dict[str, Any]]
    id_source: str  #: where the ids came from: the MVT feature id or the ``fid`` property

    def inside(self, extent: float = 4096.0) -> set[str]:
        """Ids of the features reaching into the tile itself (not only its buffer), by half a unit or more."""
        inner = shapely.box(0.5, 0.5, extent - 0.5, extent - 0.5)
        return {fid for fid, g in self.geoms.items() if g.intersects(inner)}


def decode_tile(data: bytes) -> TileContent:
    """Decode an MVT with ``mapbox_vector_tile``; ids from the ``fid`` property, else the MVT feature id."""
    decoded = mapbox_vector_tile.decode(data) if data else {}
    geoms: dict[str, Any] = {}
    props: dict[str, dict[str, Any]] = {}
    sources = set()
    for layer in decoded.values():
        for feature in layer.get("features", []):
            properties = dict(feature.get("properties") or {})
            if "fid" in properties:
                fid, source = str(properties["fid"]), "fid property"
            else:
                fid, source = str(feature.get("id")), "MVT feature id"
            sources.add(source)
            geoms[fid] = shape(feature["geometry"])
            props[fid] = properties
    return TileContent(list(decoded), geoms, props, " and ".join(sorted(sources)) or "none")


def tile_vs_truth(content: TileContent, truth_ids: set[str]) -> Verdict:
    """Every feature intersecting the tile (PostGIS) is in it; none reaching into the tile is outside it."""
    missing = truth_ids - set(content.geoms)
    wrong = content.inside() - truth_ids
    inside = len(content.inside())
    text = (f"{len(content.geoms):,} features ({inside:,} reach into the tile, {len(content.geoms) - inside:,} only "
            f"into its buffer); PostGIS: {len(truth_ids):,} intersect the tile")
    if missing or wrong:
        return Verdict(False, f"{text}; {len(missing)} of them missing, {len(wrong)} in the tile that PostGIS puts "
                              "outside it")
    return Verdict(True, text)


def compare_tiles(ref: TileContent, got: TileContent) -> Verdict:
    """Same features inside the tile, geometries (clipped to the tile) within :data:`TILE_TOLERANCE` units."""
    ref_in, got_in = ref.inside(), got.inside()
    only_ref, only_got = ref_in - set(got.geoms), got_in - set(ref.geoms)
    worst, attr = 0.0, 0
    for fid in ref_in & set(got.geoms):
        a = shapely.clip_by_rect(ref.geoms[fid], 0, 0, 4096, 4096)
        b = shapely.clip_by_rect(got.geoms[fid], 0, 0, 4096, 4096)
        worst = max(worst, float(shapely.hausdorff_distance(a, b)))
        shared = (set(ref.props[fid]) & set(got.props[fid])) - {"fid"}
        attr += any(str(ref.props[fid][k]) != str(got.props[fid][k]) for k in shared)
    problems = []
    if only_ref or only_got:
        problems.append(f"{len(only_ref)} features in one tile only, {len(only_got)} in the other only")
    if worst > TILE_TOLERANCE:
        problems.append(f"geometries differ by up to {worst:.1f} tile units")
    if attr:
        problems.append(f"{attr} features with different attributes")
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, f"same {len(ref_in):,} features in the tile, geometries within {worst:.1f} units")


# --- the whole check ---------------------------------------------------------------------------------------------


def check(candidates: dict[str, dict[str, list[str]]], truth: Truth, box_keys: list[str]) -> Checked:
    """Fetch every endpoint of every server once and compare with the truth and with each other.

    Parameters
    ----------
    candidates
        server → endpoint (box keys, ``item``, ``tile``) → URLs to try in order; the first answering 200
        is the one measured.
    truth
        From :func:`ground_truth`.
    box_keys
        The endpoints that are bbox pages.
    """
    out = Checked()
    pages: dict[str, dict[str, list[Feature]]] = {}
    with requests.Session() as session:
        for server, endpoints in candidates.items():
            out.urls[server] = {}
            pages[server] = {}
            for endpoint, urls in endpoints.items():
                url, response, problem = _fetch(session, urls)
                verdicts = out.verdicts.setdefault(endpoint, {})
                if response is not None:
                    out.urls[server][endpoint] = url
                else:
                    verdicts[server] = Verdict(False, problem)
                    if endpoint in box_keys:
                        out.matched.setdefault(endpoint, {})[server] = None
                    continue
                if endpoint == "tile":
                    out.tiles[server] = response.content
                    verdicts[server] = tile_vs_truth(decode_tile(response.content), truth.tile_ids)
                    continue
                body = _json(response) or {}
                got = features_of(body)
                pages[server][endpoint] = got
                if endpoint in box_keys:
                    matched = body.get("numberMatched")
                    out.matched.setdefault(endpoint, {})[server] = matched if isinstance(matched, int) else None
                    verdict = compare(truth.page[endpoint], got, truth.inside[endpoint])
                    if matched != truth.count[endpoint]:
                        verdict = Verdict(False, f"numberMatched {matched} ≠ {truth.count[endpoint]} (PostGIS); "
                                                 f"page: {verdict.text}")
                    verdicts[server] = verdict
                else:
                    fid, coords, props = truth.item
                    verdict = compare([(fid, coords)], got)
                    differ = _properties_differ(props, body.get("properties") or {})
                    missing = sorted(set(props) - set(body.get("properties") or {}))
                    if differ:
                        verdict = Verdict(False, f"{verdict.text}; properties differ: {', '.join(differ)}")
                    if missing and server == "sdi":
                        out.notes.append(f"{server}'s items/{{id}} leaves out properties {missing}")
                    verdicts[server] = verdict
    if "sdi" in pages and "tipg" in pages:
        for endpoint in [*box_keys, "item"]:
            sdi_page, tipg_page = pages["sdi"].get(endpoint), pages["tipg"].get(endpoint)
            if sdi_page and tipg_page:  # TiPg's page against sdi's; TiPg's extra ids checked against the truth
                out.same[endpoint] = compare(sdi_page, tipg_page, truth.inside.get(endpoint))
    if "sdi" in out.tiles and "tipg" in out.tiles:
        sdi_tile, tipg_tile = decode_tile(out.tiles["sdi"]), decode_tile(out.tiles["tipg"])
        out.same["tile"] = compare_tiles(sdi_tile, tipg_tile)
        out.notes.append(f"tiles: sdi's layer {sdi_tile.layers}, ids from the {sdi_tile.id_source}, "
                         f"{len(out.tiles['sdi']):,} bytes; TiPg's layer {tipg_tile.layers}, ids from the "
                         f"{tipg_tile.id_source}, {len(out.tiles['tipg']):,} bytes")
    return out
