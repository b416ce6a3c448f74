"""CQL2 JSON documents rewritten into what pygeofilter 0.4's ``cql2_json`` parser reads correctly.

That parser builds ``Envelope(x1, x2, y1, y2)`` from a ``bbox``'s ``minx, miny, maxx, maxy`` in order (putting
``miny`` into ``x2``), reads ``between`` only as ``[expr, [low, high]]`` where the CQL2 1.0 schema has
``[expr, low, high]``, refuses a GeoJSON ``GeometryCollection`` (it looks for ``coordinates``), takes a ``like``
pattern as it is (so ``{"op": "casei", ...}`` as the pattern is not text) and parses interval ends only as
strings. :func:`normalise` rewrites those parts and leaves the rest for the parser; nodes it builds itself
(a collection as :class:`pygeofilter.values.Geometry`, a case-insensitive ``like``) pass through the parser
unchanged, and are the nodes :mod:`sdi.query.cql2_text` builds for the same CQL2 text.
"""

from __future__ import annotations

from typing import Any

from pygeofilter import ast, values

from sdi.errors import QueryError

MAX_JSON_DEPTH = 64  #: documents nested deeper are refused (pygeofilter's parser recurses)


def _collection(node: dict[str, Any], depth: int) -> values.Geometry:
    members = node.get("geometries")
    if not isinstance(members, list):
        raise QueryError("filter: a GeometryCollection needs a list of geometries")
    for member in members:
        if depth > MAX_JSON_DEPTH:
            raise QueryError(f"filter: nested more than {MAX_JSON_DEPTH} levels deep")
        if not isinstance(member, dict) or not isinstance(member.get("type"), str):
            raise QueryError("filter: a GeometryCollection member is not a GeoJSON geometry")
        if member["type"] == "GeometryCollection":
            _collection(member, depth + 1)
        elif not isinstance(member.get("coordinates"), list):
            raise QueryError(f"filter: a GeometryCollection member {member['type'][:30]!r} has no coordinates")
    return values.Geometry(node)


def _instant(value: Any) -> Any:
    """An interval end written ``{"date": ...}`` or ``{"timestamp": ...}`` as the bare string."""
    if isinstance(value, dict) and len(value) == 1:
        inner = value.get("date", value.get("timestamp"))
        if isinstance(inner, str):
            return inner
    return value


def _casei_text(node: Any) -> str | None:
    """The text of ``{"op": "casei", "args": ["text"]}``, else ``None``."""
    if isinstance(node, dict) and node.get("op") == "casei":
        args = node.get("args")
        if isinstance(args, list) and len(args) == 1 and isinstance(args[0], str):
            return args[0]
    return None


#: How many arguments each operator takes (``s_*`` and ``t_*``: two; ``and``/``or``: two or more).
ARITY: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("=", "<>", "<", "<=", ">", ">=", "like", "in", "+", "-", "*", "/"), (2,)),
    **dict.fromkeys(("not", "isNull", "casei", "accenti"), (1,)), "between": (2, 3)}


def _check_arity(op: Any, args: Any) -> None:
    """Refuse (:class:`QueryError`, one line) an operator that is not a name or has the wrong number of arguments:
    pygeofilter's parser would otherwise fail with its own internals in the message."""
    if not isinstance(op, str) or not isinstance(args, list):
        raise QueryError("filter: an operation needs an \"op\" name and a list of \"args\"")
    key = op.lower()
    wanted = ARITY.get(op) or ((2,) if key.startswith(("s_", "t_")) and "dwithin" not in key
                               and "dbeyond" not in key else None)
    if key in ("and", "or"):
        if len(args) < 2:
            raise QueryError(f"filter: {op} takes two or more arguments")
    elif wanted is not None and len(args) not in wanted:
        raise QueryError(f"filter: {op[:30]} takes {' or '.join(map(str, wanted))} argument"
                         f"{'' if wanted == (1,) else 's'}, not {len(args)}")


def normalise(node: Any, depth: int = 0) -> Any:
    """A CQL2 JSON document (from :func:`json.loads`) rewritten for pygeofilter's ``cql2_json`` parser.

    ``{"bbox": [...]}`` becomes the ``bbox`` function CQL2 text's ``BBOX(...)`` gives (so the same checks apply),
    ``between``'s three arguments become ``[expr, [low, high]]``, a ``GeometryCollection`` becomes a
    :class:`pygeofilter.values.Geometry`, ``{"date"|"timestamp": s}`` in an
    interval becomes ``s``, and ``like`` with a ``casei`` pattern becomes ``ast.Like(..., nocase=True)``.

    Parameters
    ----------
    node
        The document or a part of it.
    depth
        How deep ``node`` is in the document.

    Returns
    -------
    Any
        The rewritten document; the input is not changed.

    Raises
    ------
    QueryError
        When the document is nested more than :data:`MAX_JSON_DEPTH` levels deep, a collection, bbox, property
        name or geometry CRS is malformed, or it uses ``accenti`` or ``t_overlaps``.
    """
    if depth > MAX_JSON_DEPTH:
        raise QueryError(f"filter: nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(node, list):
        return [normalise(v, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    box = node.get("bbox")
    if len(node) == 1 and isinstance(box, list) and len(box) in (4, 6):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            raise QueryError("filter: a bbox holds numbers only")
        return ast.Function("bbox", list(box))  # as CQL2 text's BBOX(...): the same range checks
    if "property" in node and not isinstance(node["property"], str):
        raise QueryError("filter: a property is named by a string")
    if "crs" in node and "type" in node and not (isinstance(node["crs"], dict)
                                                 and isinstance(node["crs"].get("properties", {}), dict)):
        raise QueryError("filter: a geometry's crs must be an object such as {\"type\": \"name\", ...}")
    if node.get("type") == "GeometryCollection" and "coordinates" not in node:
        return _collection(node, depth + 1)
    if len(node) == 1 and isinstance(node.get("interval"), list):
        return {"interval": [_instant(v) for v in node["interval"]]}
    op, args = node.get("op"), node.get("args")
    if op is not None:
        _check_arity(op, args)
    if op == "accenti":
        raise QueryError("filter: ACCENTI (accent-insensitive comparison) is not supported")
    if op == "t_overlaps":  # pygeofilter reads it as t_intersects, which it is not
        raise QueryError("filter: T_OVERLAPS is not supported")
    if op == "between" and isinstance(args, list) and len(args) == 3:
        node = {**node, "args": [args[0], [args[1], args[2]]]}
    if op == "like" and isinstance(args, list) and len(args) == 2 and _casei_text(args[1]) is not None:
        from pygeofilter.parsers.cql2_json.parser import walk_cql_json

        return ast.Like(walk_cql_json(normalise(args[0], depth + 1)), _casei_text(args[1]), True, "%", ".", "\\",
                        False)
    return {k: normalise(v, depth + 1) for k, v in node.items()}
