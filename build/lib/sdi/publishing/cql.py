"""CQL2 filters (a pygeofilter AST) as PostgreSQL ``WHERE`` clauses with bound values.

:func:`to_sql` translates comparisons, ``LIKE``/``ILIKE``, ``IN``, ``BETWEEN``, ``IS NULL``, ``AND``/``OR``/
``NOT`` and the spatial predicates ``INTERSECTS``, ``WITHIN``, ``CONTAINS``, ``DISJOINT`` (plus ``TOUCHES``,
``CROSSES``, ``OVERLAPS``, ``EQUALS``) into :mod:`psycopg.sql` with *named* placeholders, so one clause can be
used twice in a statement (page and count). Identifiers are quoted; every value is bound.

Geometry literals carry their CRS in ``geometry['crs']`` (pygeoapi's ``modify_pygeofilter`` transforms them
to the storage CRS and tags them, *in that CRS's axis order*: EPSG:2326 literals arrive northing first). The
axis order is read from pyproj's ``axis_info`` and the literal is flipped to x/y (easting first) in SQL
when the CRS's first axis points north or south. An untagged literal is taken as CRS84 (lon, lat).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import pyproj
from psycopg import sql
from pygeoapi.provider.base import ProviderInvalidQueryError
from pygeoapi.util import get_crs_from_uri
from pygeofilter import ast, values

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

_COMPARISON = {ast.Equal: "=", ast.NotEqual: "<>", ast.LessThan: "<", ast.LessEqual: "<=",
               ast.GreaterThan: ">", ast.GreaterEqual: ">="}
_SPATIAL = {ast.GeometryIntersects: "st_intersects", ast.GeometryWithin: "st_within",
            ast.GeometryContains: "st_contains", ast.GeometryDisjoint: "st_disjoint",
            ast.GeometryTouches: "st_touches", ast.GeometryCrosses: "st_crosses",
            ast.GeometryOverlaps: "st_overlaps", ast.GeometryEquals: "st_equals"}


def crs_srid(crs: pyproj.CRS) -> int:
    """The PostGIS SRID of ``crs`` (CRS84 is SRID 4326, which PostGIS keeps as x = longitude).

    Raises
    ------
    ProviderInvalidQueryError
        When the CRS has no EPSG code.
    """
    code = crs.to_epsg()
    if code is None and crs.to_authority() == ("OGC", "CRS84"):
        code = 4326
    if code is None:
        raise ProviderInvalidQueryError(user_msg=f"CRS {crs.name!r} has no EPSG code")
    return int(code)


@lru_cache(maxsize=64)
def crs_facts(uri: str) -> tuple[int, bool, bool]:
    """(SRID, north first, geographic) of a CRS URI, cached: pyproj's ``to_epsg`` costs ~10 ms a call.

    Raises
    ------
    pyproj.exceptions.CRSError, ValueError
        For an unknown or malformed URI.
    """
    crs = get_crs_from_uri(uri)
    return crs_srid(crs), north_first(crs), bool(crs.is_geographic)


def north_first(crs: pyproj.CRS) -> bool:
    """Whether the first axis of ``crs`` is northing or latitude (so coordinates need flipping to x/y)."""
    return bool(crs.axis_info) and crs.axis_info[0].direction.lower() in ("north", "south")


class _Translator:
    def __init__(self, columns: Mapping[str, str], geom_column: str, srid: int) -> None:
        self.columns = columns
        self.geom_column = geom_column
        self.srid = srid
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> sql.Composable:
        name = f"cql{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def attribute(self, node: Any) -> sql.Composable:
        if not isinstance(node, ast.Attribute):
            raise ProviderInvalidQueryError(user_msg=f"filter: expected a property name, got {node!r}")
        if node.name not in self.columns and node.name != self.geom_column:
            raise ProviderInvalidQueryError(user_msg=f"filter: unknown property {node.name!r}")
        return sql.SQL("t.{}").format(sql.Identifier(node.name))

    def value(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, bool | int | float | str) or node is None:
            return self.bind(node)
        if isinstance(node, ast.Function) and node.name.lower() in ("lower", "casei") and len(node.arguments) == 1:
            return sql.SQL("lower(({})::text)").format(self.value(node.arguments[0]))  # CQL2 CASEI()
        raise ProviderInvalidQueryError(user_msg=f"filter: unsupported value {node!r}")

    def geometry(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if not isinstance(node, values.Geometry):
            raise ProviderInvalidQueryError(user_msg=f"filter: expected a geometry, got {node!r}")
        geojson = {k: v for k, v in node.geometry.items() if k != "crs"}
        crs_name = node.geometry.get("crs", {}).get("properties", {}).get("name") or CRS84
        try:
            srid, flip, _ = crs_facts(crs_name)
        except Exception as exc:  # pyproj.CRSError or a malformed URI
            raise ProviderInvalidQueryError(user_msg=f"filter: unknown CRS {crs_name!r}") from exc
        expr: sql.Composable = sql.SQL("st_geomfromgeojson({})").format(self.bind(json.dumps(geojson)))
        if flip:
            expr = sql.SQL("st_flipcoordinates({})").format(expr)
        expr = sql.SQL("st_setsrid({}, {})").format(expr, self.bind(srid))
        if srid != self.srid:
            expr = sql.SQL("st_transform({}, {})").format(expr, self.bind(self.srid))
        return expr

    def like_pattern(self, node: ast.Like) -> str:
        if not isinstance(node.pattern, str):
            raise ProviderInvalidQueryError(user_msg="filter: LIKE needs a text pattern")
        out, chars, i = [], node.pattern, 0
        while i < len(chars):
            ch = chars[i]
            if ch == node.escapechar and i + 1 < len(chars):
                i += 1
                out.append("\\" + chars[i] if chars[i] in "%_\\" else chars[i])
            elif ch == node.wildcard:
                out.append("%")
            elif ch == node.singlechar:
                out.append("_")
            else:
                out.append("\\" + ch if ch in "%_\\" else ch)
            i += 1
        return "".join(out)

    def __call__(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.And | ast.Or):
            op = sql.SQL(" and " if isinstance(node, ast.And) else " or ")
            return sql.SQL("({})").format(op.join([self(node.lhs), self(node.rhs)]))
        if isinstance(node, ast.Not):
            return sql.SQL("(not {})").format(self(node.sub_node))
        if type(node) in _COMPARISON:
            return sql.SQL("({} {} {})").format(self.value(node.lhs), sql.SQL(_COMPARISON[type(node)]),
                                                 self.value(node.rhs))
        if isinstance(node, ast.Like):
            like = ("not " if node.not_ else "") + ("ilike" if node.nocase else "like")
            return sql.SQL("({}::text {} {})").format(self.attribute(node.lhs), sql.SQL(like),
                                                       self.bind(self.like_pattern(node)))
        if isinstance(node, ast.In):
            if not node.sub_nodes:
                return sql.SQL("true" if node.not_ else "false")
            items = sql.SQL(", ").join([self.value(v) for v in node.sub_nodes])
            return sql.SQL("({} {}in ({}))").format(self.value(node.lhs), sql.SQL("not " if node.not_ else ""),
                                                     items)
        if isinstance(node, ast.Between):
            return sql.SQL("({} {}between {} and {})").format(
                self.value(node.lhs), sql.SQL("not " if node.not_ else ""), self.value(node.low),
                self.value(node.high))
        if isinstance(node, ast.IsNull):
            return sql.SQL("({} is {}null)").format(self.value(node.lhs), sql.SQL("not " if node.not_ else ""))
        if type(node) in _SPATIAL:
            return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL[type(node)]), self.geometry(node.lhs),
                                                self.geometry(node.rhs))
        if isinstance(node, ast.Include):
            return sql.SQL("false" if node.not_ else "true")
        raise ProviderInvalidQueryError(user_msg=f"filter: unsupported expression {type(node).__name__}")


def parse_filter_text(text: str) -> Any:
    """Parse a ``filter`` text as CQL2 text, else as ECQL (the dialect pygeoapi 0.21 parses).

    OGC API – Features Part 3 names CQL2 text (``S_INTERSECTS``, ``CASEI``, ``DATE('…')``); pygeoapi 0.21
    only knows ECQL (``INTERSECTS``). Both are accepted, whatever ``filter-lang`` says: the two agree on
    comparisons, ``LIKE``, ``IN``, ``BETWEEN``, ``IS NULL`` and ``AND``/``OR``/``NOT``.

    Raises
    ------
    ValueError
        When the text is neither (the message is the ECQL parser's).
    """
    from pygeofilter.parsers.cql2_text import parse as parse_cql2
    from pygeofilter.parsers.ecql import parse as parse_ecql

    try:
        return parse_cql2(text)
    except Exception:  # lark's parse errors have no common public base
        try:
            return parse_ecql(text)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"filter: not valid CQL2 or ECQL text: {first}") from exc


def to_sql(node: Any, columns: Mapping[str, str], geom_column: str = "geom",
           srid: int = 2326) -> tuple[sql.Composable, dict[str, Any]]:
    """Translate a pygeofilter AST into a boolean SQL expression over the table alias ``t``.

    Parameters
    ----------
    node
        The parsed (and, through pygeoapi, CRS-adjusted) filter.
    columns
        Queryable column names mapped to their PostgreSQL types.
    geom_column
        The geometry column, also accepted as a property name.
    srid
        The SRID of ``geom_column``; geometry literals are transformed to it.

    Returns
    -------
    tuple[sql.Composable, dict[str, Any]]
        The expression with named placeholders ``cql0``, ``cql1``, ... and their values.

    Raises
    ------
    ProviderInvalidQueryError
        For unknown properties, unsupported expressions or CRSs.
    """
    translator = _Translator(columns, geom_column, srid)
    return translator(node), translator.params
