"""``service: wfs``: every feature of a WFS 2.0 feature type, into one GML or GeoJSON file.

1. ``GetCapabilities`` (WFS 2.0.0): the feature type must be listed; its CRSs (EPSG:2326 is asked for when offered,
   as ``srsName=EPSG:2326``, easting first), the output formats, and the ``CountDefault`` (the most features the
   server returns per request) and ``ImplementsResultPaging`` constraints. Requests go to ``source.url`` itself,
   not to the address the capabilities advertise (often wrong behind proxies).
2. ``GetFeature`` with ``STARTINDEX``/``COUNT`` paging, ``COUNT`` = ``source.page_size`` or ``SDI_FETCH_PAGE_SIZE``
   capped at ``CountDefault``, until a page returns fewer features than asked for (or none); when a page gives
   ``numberMatched``, the features paged must add up to it.
3. ``output: gml`` (the default; GML 3.2, which every WFS 2.0 serves): the pages' ``wfs:member`` elements are
   written into one ``wfs:FeatureCollection`` (time stamps, ``next``/``previous`` and schema locations dropped)
   beside the ``DescribeFeatureType`` schema as ``<name>.xsd``, so GDAL types the columns from the schema (codes with
   leading zeros stay text). ``output: geojson``: the server's GeoJSON format, pages merged, in the CRS asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lxml import etree

from loaders.fetch.http import Client, FetchError
from loaders.fetch.result import FeatureCollectionWriter, Fetched, finished, geojson_head, plain_feature
from sdi.crs import HK_GRID
from sdi.layerdef import LayerDefinition

NS = {"wfs": "http://www.opengis.net/wfs/2.0", "ows": "http://www.opengis.net/ows/1.1",
      "gml": "http://www.opengis.net/gml/3.2", "xsd": "http://www.w3.org/2001/XMLSchema"}
#: A parser that never fetches anything and expands no entities.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False)


class Capabilities:
    """What the capabilities say of one feature type."""

    def __init__(self, name: str, crs: list[str], formats: list[str], count_default: int | None, paging: bool):
        self.name, self.crs, self.formats = name, crs, formats
        self.count_default, self.paging = count_default, paging


def _base(url: str) -> str:
    """``url`` without the query parameters that each request sets itself."""
    parts = urlsplit(url)
    ours = {"service", "request", "version", "acceptversions", "typenames", "typename"}
    query = "&".join(q for q in parts.query.split("&") if q and q.split("=", 1)[0].lower() not in ours)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _xml(client: Client, url: str, params: dict[str, Any]) -> Any:
    body, response = client.get_bytes(url, params)
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise client.fail(url, f"answered {kind} that is not XML ({str(exc)[:100]})") from None
    if etree.QName(root).localname == "ExceptionReport":
        text = " ".join(" ".join(root.itertext()).split())[:200]
        raise client.fail(url, f"{params.get('REQUEST', 'request')} refused: {text}")
    return root


def _local(name: str) -> str:
    return name.split(":", 1)[-1]


def capabilities(client: Client, url: str, typename: str) -> Capabilities:
    """Read the feature type's CRSs, formats and the paging constraints from ``GetCapabilities``."""
    root = _xml(client, url, {"SERVICE": "WFS", "REQUEST": "GetCapabilities", "ACCEPTVERSIONS": "2.0.0",
                             "VERSION": "2.0.0"})
    types = root.findall(".//wfs:FeatureTypeList/wfs:FeatureType", NS)
    names = [(t.findtext("wfs:Name", "", NS) or "").strip() for t in types]
    match = next((i for i, n in enumerate(names) if n == typename), None)
    if match is None:
        match = next((i for i, n in enumerate(names) if _local(n) == _local(typename)), None)
    if match is None:
        shown = ", ".join(names[:20]) or "none"
        raise client.fail(url, f"the WFS has no feature type {typename!r} (it has: {shown})")
    kind = types[match]
    crs = [(e.text or "").strip() for e in kind.findall("wfs:DefaultCRS", NS) + kind.findall("wfs:OtherCRS", NS)]
    formats = [(e.text or "").strip() for e in kind.findall("wfs:OutputFormats/wfs:Format", NS)]
    if not formats:
        for op in root.findall(".//ows:OperationsMetadata/ows:Operation[@name='GetFeature']", NS):
            for par in op.findall("ows:Parameter[@name='outputFormat']", NS):
                formats += [(v.text or "").strip() for v in par.findall(".//ows:Value", NS)]
    constraints = {c.get("name"): (c.findtext("ows:DefaultValue", "", NS) or "").strip()
                   for c in root.findall(".//ows:OperationsMetadata/ows:Constraint", NS)}
    count = constraints.get("CountDefault", "")
    paging = constraints.get("ImplementsResultPaging", "TRUE").upper() != "FALSE"
    return Capabilities(names[match], crs, formats, int(count) if count.isdigit() and int(count) > 0 else None,
                        paging)


def _epsg(crs: str) -> int | None:
    tail = crs.replace("::", ":").rstrip("/").replace("/", ":").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _pick_format(caps: Capabilities, output: str) -> str | None:
    if output == "geojson":
        return next((f for f in caps.formats if "json" in f.lower()), None)
    preferred = ("application/gml+xml; version=3.2", "text/xml; subtype=gml/3.2.1", "text/xml; subtype=gml/3.2")
    return next((f for f in preferred if f in caps.formats), None)  # None: the WFS 2.0 default, GML 3.2


def fetch_feature_type(definition: LayerDefinition, client: Client, folder: Path) -> Fetched:
    """Page through the feature type into ``folder/<name>.gml`` (with ``<name>.xsd``) or ``<name>.geojson``.

    Raises
    ------
    FetchError
        A request failed or was refused, the type or the output format is not offered, a page is malformed, the
        pages exceed ``SDI_FETCH_MAX_PAGES``, or the features paged do not add up to ``numberMatched``.
    """
    url = _base(definition.source.url or "")
    typename = definition.source.typename or ""
    output = definition.source.output or "gml"
    caps = capabilities(client, url, typename)
    fmt = _pick_format(caps, output)
    if output == "geojson" and fmt is None:
        raise client.fail(url, f"the WFS offers no GeoJSON output for {caps.name} (it offers: "
                               f"{', '.join(caps.formats) or 'none listed'}); use output: gml")
    epsgs = [_epsg(c) for c in caps.crs]
    srs = f"EPSG:{HK_GRID}" if HK_GRID in epsgs else None
    crs_name = srs or (f"EPSG:{epsgs[0]}" if epsgs and epsgs[0] else None)
    asked = definition.source.page_size or client.settings.fetch_page_size
    count = min(asked, caps.count_default) if caps.count_default else asked
    params: dict[str, Any] = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "GetFeature", "TYPENAMES": caps.name}
    if fmt:
        params["OUTPUTFORMAT"] = fmt
    if srs:
        params["SRSNAME"] = srs
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in _local(caps.name))[:100] or "features"
    notes = [f"WFS 2.0 feature type {caps.name} at {url}: {output.upper()} in {srs or crs_name or 'its default CRS'}"
             + (f", {count} per page" if caps.paging else ", no paging (the server does not implement it)")]
    if output == "gml":
        path, total, pages, matched = _gml_pages(client, url, params, count, caps, folder / f"{stem}.gml")
    else:
        path, total, pages, matched = _geojson_pages(client, url, params, count, caps, folder / f"{stem}.geojson",
                                                     crs_name)
    if matched is not None and total != matched:
        raise client.fail(url, f"paged {total:,} features but the server said numberMatched {matched:,}; the "
                               f"data changed while paging or the server pages wrongly")
    notes.append(f"{total:,} features in {pages} page(s)")
    return finished(path, client=client, features=total, pages=pages, notes=notes)


def _check_pages(client: Client, pages: int) -> None:
    if pages >= client.settings.fetch_max_pages:
        raise FetchError(f"{client.label}: more than {client.settings.fetch_max_pages:,} pages (SDI_FETCH_MAX_PAGES)")


def _paging(caps: Capabilities, start: int, count: int) -> dict[str, Any]:
    return {"STARTINDEX": start, "COUNT": count} if caps.paging else {}


def _matched(value: Any) -> int | None:
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def _gml_pages(client: Client, url: str, params: dict[str, Any], count: int, caps: Capabilities,
               path: Path) -> tuple[Path, int, int, int | None]:
    total, matched, pages = 0, None, 0
    with path.open("wb") as out:
        while True:
            _check_pages(client, pages)
            root = _xml(client, url, {**params, **_paging(caps, total, count)})
            pages += 1
            if etree.QName(root).localname != "FeatureCollection":
                raise client.fail(url, f"GetFeature answered {etree.QName(root).localname}, not a FeatureCollection")
            if pages == 1:
                opening = etree.tostring(etree.Element(root.tag, nsmap=root.nsmap), encoding="unicode")
                opening = opening[:-2].rstrip() + ">" if opening.endswith("/>") else opening
                out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n' + opening.encode() + b"\n")
            members = root.findall("wfs:member", NS)
            for member in members:
                for bounded in member.findall("*/gml:boundedBy", NS):
                    bounded.getparent().remove(bounded)
                out.write(etree.tostring(member, encoding="UTF-8", xml_declaration=False) + b"\n")
            returned = _matched(root.get("numberReturned"))
            if returned is not None and returned != len(members):
                raise client.fail(url, f"a page says numberReturned {returned} but holds {len(members)} members")
            total += len(members)
            matched = matched if matched is not None else _matched(root.get("numberMatched"))
            if not caps.paging or not members or len(members) < count or (matched is not None and total >= matched):
                break
        out.write(f"</{root.prefix + ':' if root.prefix else ''}{etree.QName(root).localname}>\n".encode())
    _schema(client, url, params, caps, path.with_suffix(".xsd"))
    return path, total, pages, matched


def _schema(client: Client, url: str, params: dict[str, Any], caps: Capabilities, target: Path) -> None:
    """Save ``DescribeFeatureType`` as the GML file's ``.xsd``, for GDAL to type the columns; skipped (GDAL then
    infers types) when the server does not answer with an XML schema."""
    ask = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "DescribeFeatureType", "TYPENAMES": caps.name}
    if "OUTPUTFORMAT" in params:
        ask["OUTPUTFORMAT"] = params["OUTPUTFORMAT"]
    try:
        root = _xml(client, url, ask)
    except Exception:  # the schema only improves typing; the features are what matter
        return
    if etree.QName(root).localname == "schema":
        target.write_bytes(etree.tostring(root, encoding="UTF-8", xml_declaration=True))


def _geojson_pages(client: Client, url: str, params: dict[str, Any], count: int, caps: Capabilities, path: Path,
                   crs_name: str | None) -> tuple[Path, int, int, int | None]:
    matched, pages = None, 0
    with FeatureCollectionWriter(path, geojson_head(crs_name)) as out:
        while True:
            _check_pages(client, pages)
            data = client.get_json(url, {**params, **_paging(caps, out.count, count)})
            pages += 1
            features = data.get("features") if isinstance(data, dict) else None
            if not isinstance(features, list):
                raise client.fail(url, "GetFeature's GeoJSON is not a FeatureCollection (no features list)")
            try:
                for feature in features:
                    out.write(plain_feature(feature))
            except ValueError as exc:
                raise client.fail(url, f"not a GeoJSON FeatureCollection: {exc}") from None
            if matched is None:
                matched = _matched(data.get("numberMatched", data.get("totalFeatures")))
            if not caps.paging or not features or len(features) < count or (matched is not None
                                                                             and out.count >= matched):
                break
    return path, out.count, pages, matched
