"""A CQL2 text parser (OGC 21-065r2) producing the pygeofilter syntax trees :mod:`sdi.query.cql` translates.

pygeofilter 0.4's own CQL2 text grammar refuses ``NOT (a = 1 OR b > 2)``, the escaped quote ``''``, boolean
literals as predicates and one-letter property names; this one follows the CQL2 BNF for the conformance
classes the server declares: comparisons, ``LIKE``/``BETWEEN``/``IN``/``IS NULL`` and their ``NOT`` forms,
``CASEI``, arithmetic (``+ - * /``, unary minus, parentheses), ``TRUE``/``FALSE``, ``NOT``/``AND``/``OR``,
the ``S_*`` spatial and ``T_*`` temporal functions, WKT literals (``MULTI*`` and ``GEOMETRYCOLLECTION``
included), ``BBOX(...)``, ``DATE('...')``, ``TIMESTAMP('...')`` and ``INTERVAL(...)``. It also reads
pygeofilter's infix temporal form (``INTERVAL(...) T_BEFORE day``) so filters that parsed before still do.

The nodes are the ones pygeofilter's CQL2 parsers build (``CASEI`` is ``Function("lower")``, ``NOT LIKE`` is
``Like(not_=True)``, a ``BBOX`` literal is ``Function("bbox")``, a WKT literal is a :class:`values.Geometry`
holding GeoJSON), so the SQL evaluator needs no change. ``CASEI(x) LIKE CASEI('pattern')`` becomes
``Like(CASEI(x), 'pattern', nocase=True)``, as ``LIKE`` needs a text pattern.

The LALR parser reduces without recursion; nesting of parentheses is refused past :data:`MAX_NESTING` before
parsing, and every error is a one-line :class:`Cql2TextError`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from functools import lru_cache
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from pygeofilter import ast, values
from pygeofilter.cql2 import SPATIAL_PREDICATES_MAP, TEMPORAL_PREDICATES_MAP
from pygeofilter.util import parse_date, parse_datetime

from sdi.errors import QueryError

MAX_CHARS = 20_000  #: longer texts are refused (the caller's ``MAX_FILTER_CHARS``)
MAX_NESTING = 100  #: parentheses nested deeper are refused before parsing


class Cql2TextError(QueryError):
    """The text is not CQL2 text this parser reads (it may still be ECQL); a one-line message."""


class Cql2TextRefused(Cql2TextError):
    """The text is CQL2 but asks for something the server does not do (``ACCENTI``, ``DIV``, too deep)."""


_SPATIAL = sorted(SPATIAL_PREDICATES_MAP, key=len, reverse=True)
#: The temporal functions, as nodes sdi's evaluator reads. pygeofilter maps T_OVERLAPS to the node of
#: T_INTERSECTS (different meanings): it is refused instead, as are the functions the evaluator lacks; T_DISJOINT
#: (missing from pygeofilter's map) is added.
TEMPORAL_FUNCTIONS: dict[str, type] = {**{k: v for k, v in TEMPORAL_PREDICATES_MAP.items() if k != "t_overlaps"},
                                       "t_disjoint": ast.TimeDisjoint}
_TEMPORAL = sorted({*TEMPORAL_FUNCTIONS, "t_overlaps"}, key=len, reverse=True)

GRAMMAR = r"""
?start: expr

?expr: and_expr
     | expr OR and_expr                                  -> or_
?and_expr: not_expr
         | and_expr AND not_expr                         -> and_
?not_expr: predicate
         | NOT not_expr                                  -> not_
?predicate: sum
          | sum COMP_OP sum                              -> comparison
          | sum LIKE sum                                 -> like
          | sum NOT LIKE sum                             -> not_like
          | sum BETWEEN sum AND sum                      -> between
          | sum NOT BETWEEN sum AND sum                  -> not_between
          | sum IN "(" arguments ")"                     -> in_
          | sum NOT IN "(" arguments ")"                 -> not_in
          | sum IS NULL                                  -> is_null
          | sum IS NOT NULL                              -> is_not_null
          | sum temporal_op sum                          -> infix_temporal

?sum: product
    | sum "+" product                                    -> add
    | sum "-" product                                    -> sub
?product: unary
        | product "*" unary                              -> mul
        | product "/" unary                              -> div
        | product "%" unary                              -> unsupported_mod
        | product DIV unary                              -> unsupported_div
?unary: power
      | "-" unary                                        -> neg
      | "+" unary                                        -> pos
?power: primary
      | primary "^" unary                                -> unsupported_pow
?primary: NUMBER                                         -> number
        | STRING                                         -> string
        | TRUE                                           -> true
        | FALSE                                          -> false
        | IDENTIFIER                                     -> attribute
        | QUOTED_IDENTIFIER                              -> quoted_attribute
        | IDENTIFIER "(" [arguments] ")"                 -> function
        | spatial_op "(" expr "," expr ")"               -> spatial
        | temporal_op "(" expr "," expr ")"              -> temporal
        | geometry
        | "(" expr ")"

arguments: expr ("," expr)*

!spatial_op: SPATIAL_OP
!temporal_op: TEMPORAL_OP

?geometry: POINT "(" coordinate ")"                                   -> point
         | LINESTRING "(" coordinates ")"                             -> linestring
         | POLYGON "(" rings ")"                                      -> polygon
         | MULTIPOINT "(" points ")"                                  -> multipoint
         | MULTILINESTRING "(" rings ")"                              -> multilinestring
         | MULTIPOLYGON "(" polygons ")"                              -> multipolygon
         | GEOMETRYCOLLECTION "(" geometry ("," geometry)* ")"        -> geometrycollection
coordinate: signed signed signed?
coordinates: coordinate ("," coordinate)*
ring: "(" coordinates ")"
rings: ring ("," ring)*
polygons: "(" rings ")" ("," "(" rings ")")*
point_item: "(" coordinate ")" | coordinate
points: point_item ("," point_item)*
signed: NUMBER | "-" NUMBER -> negative

COMP_OP: "=" | "<>" | "<=" | ">=" | "<" | ">" | "!="
OR: "OR"i
AND: "AND"i
NOT: "NOT"i
LIKE: "LIKE"i
BETWEEN: "BETWEEN"i
IN: "IN"i
IS: "IS"i
NULL: "NULL"i
TRUE: "TRUE"i
FALSE: "FALSE"i
DIV: "DIV"i
SPATIAL_OP.3: /(?:SPATIAL_NAMES)(?![\w.:])/i
TEMPORAL_OP.3: /(?:TEMPORAL_NAMES)(?![\w.:])/i
POINT.2: /POINT(?:\s*ZM?|\s*M)?(?=\s*\()/i
LINESTRING.2: /LINESTRING(?:\s*ZM?|\s*M)?(?=\s*\()/i
POLYGON.2: /POLYGON(?:\s*ZM?|\s*M)?(?=\s*\()/i
MULTIPOINT.2: /MULTIPOINT(?:\s*ZM?|\s*M)?(?=\s*\()/i
MULTILINESTRING.2: /MULTILINESTRING(?:\s*ZM?|\s*M)?(?=\s*\()/i
MULTIPOLYGON.2: /MULTIPOLYGON(?:\s*ZM?|\s*M)?(?=\s*\()/i
GEOMETRYCOLLECTION.2: /GEOMETRYCOLLECTION(?:\s*ZM?|\s*M)?(?=\s*\()/i
NUMBER: /(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/
STRING: /'(?:''|[^'])*'/
QUOTED_IDENTIFIER: /"(?:""|[^"])+"/
IDENTIFIER: /[^\W\d][\w.:]*/i

%ignore /\s+/
""".replace("SPATIAL_NAMES", "|".join(_SPATIAL)).replace("TEMPORAL_NAMES", "|".join(_TEMPORAL))


def _is_condition(node: Any) -> bool:
    """True for a node that is true or false (a predicate, a combination, a boolean literal)."""
    return isinstance(node, ast.Condition | ast.Predicate | bool)


def _condition(node: Any, where: str) -> Any:
    if not _is_condition(node):
        raise Cql2TextError(f"{where} needs a condition, not a value")
    return node


def _scalar(node: Any, where: str) -> Any:
    if isinstance(node, ast.Condition | ast.Predicate):
        raise Cql2TextError(f"{where} needs a value, not a condition")
    return node


def _instant(text: Any, what: str) -> dt.date | None:
    if isinstance(text, ast.Attribute | ast.Function):
        raise Cql2TextRefused(f"{what} with a property or function as a bound is not supported")
    if not isinstance(text, str):
        raise Cql2TextError(f"{what} needs a quoted date or timestamp")
    if text == ".." and what == "INTERVAL":
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return parse_date(text)
        if what == "DATE":
            raise ValueError(text)
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?", text):
            raise ValueError(text)
        moment = parse_datetime(text)
    except (ValueError, TypeError, OverflowError) as exc:
        raise Cql2TextError(f"{what}: {text[:40]!r} is not an RFC 3339 date or timestamp") from exc
    if moment is None:
        raise Cql2TextError(f"{what}: {text[:40]!r} is not an RFC 3339 date or timestamp")
    return moment


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Cql2TextError(f"{what} needs numbers")
    return value


@v_args(inline=True)
class _ToAst(Transformer[Token, Any]):
    """Build pygeofilter nodes as the LALR parser reduces (no recursion)."""

    # --- conditions -----------------------------------------------------------------------------------
    def or_(self, lhs: Any, _op: Token, rhs: Any) -> Any:
        return ast.Or(_condition(lhs, "OR"), _condition(rhs, "OR"))

    def and_(self, lhs: Any, _op: Token, rhs: Any) -> Any:
        return ast.And(_condition(lhs, "AND"), _condition(rhs, "AND"))

    def not_(self, _op: Token, node: Any) -> Any:
        return ast.Not(_condition(node, "NOT"))

    def comparison(self, lhs: Any, op: Token, rhs: Any) -> Any:
        cls = {"=": ast.Equal, "<>": ast.NotEqual, "!=": ast.NotEqual, "<": ast.LessThan, "<=": ast.LessEqual,
               ">": ast.GreaterThan, ">=": ast.GreaterEqual}[str(op)]
        return cls(_scalar(lhs, str(op)), _scalar(rhs, str(op)))

    def _like(self, lhs: Any, pattern: Any, not_: bool) -> Any:
        lhs, pattern, nocase = _scalar(lhs, "LIKE"), _scalar(pattern, "LIKE"), False
        if (isinstance(pattern, ast.Function) and pattern.name == "lower" and len(pattern.arguments) == 1
                and isinstance(pattern.arguments[0], str)):
            pattern, nocase = pattern.arguments[0], True  # CASEI('p'): match case-insensitively
        return ast.Like(lhs, pattern, nocase, "%", ".", "\\", not_)

    def like(self, lhs: Any, _op: Token, pattern: Any) -> Any:
        return self._like(lhs, pattern, False)

    def not_like(self, lhs: Any, _not: Token, _op: Token, pattern: Any) -> Any:
        return self._like(lhs, pattern, True)

    def between(self, lhs: Any, _op: Token, low: Any, _and: Token, high: Any) -> Any:
        return ast.Between(_scalar(lhs, "BETWEEN"), _scalar(low, "BETWEEN"), _scalar(high, "BETWEEN"), False)

    def not_between(self, lhs: Any, _not: Token, _op: Token, low: Any, _and: Token, high: Any) -> Any:
        return ast.Between(_scalar(lhs, "BETWEEN"), _scalar(low, "BETWEEN"), _scalar(high, "BETWEEN"), True)

    def in_(self, lhs: Any, _op: Token, options: list[Any]) -> Any:
        return ast.In(_scalar(lhs, "IN"), [_scalar(o, "IN") for o in options], False)

    def not_in(self, lhs: Any, _not: Token, _op: Token, options: list[Any]) -> Any:
        return ast.In(_scalar(lhs, "IN"), [_scalar(o, "IN") for o in options], True)

    def is_null(self, lhs: Any, _is: Token, _null: Token) -> Any:
        return ast.IsNull(_scalar(lhs, "IS NULL"), False)

    def is_not_null(self, lhs: Any, _is: Token, _not: Token, _null: Token) -> Any:
        return ast.IsNull(_scalar(lhs, "IS NOT NULL"), True)

    def spatial(self, op: str, lhs: Any, rhs: Any) -> Any:
        return SPATIAL_PREDICATES_MAP[op](_scalar(lhs, op.upper()), _scalar(rhs, op.upper()))

    def temporal(self, op: str, lhs: Any, rhs: Any) -> Any:
        if op not in TEMPORAL_FUNCTIONS:
            raise Cql2TextRefused(f"{op.upper()} is not supported")
        return TEMPORAL_FUNCTIONS[op](_scalar(lhs, op.upper()), _scalar(rhs, op.upper()))

    def infix_temporal(self, lhs: Any, op: str, rhs: Any) -> Any:
        return self.temporal(op, lhs, rhs)

    def spatial_op(self, token: Token) -> str:
        return str(token).lower()

    def temporal_op(self, token: Token) -> str:
        return str(token).lower()

    # --- values ---------------------------------------------------------------------------------------
    def _arithmetic(self, cls: type, lhs: Any, rhs: Any, op: str) -> Any:
        return cls(_scalar(lhs, op), _scalar(rhs, op))

    def add(self, lhs: Any, rhs: Any) -> Any:
        return self._arithmetic(ast.Add, lhs, rhs, "+")

    def sub(self, lhs: Any, rhs: Any) -> Any:
        return self._arithmetic(ast.Sub, lhs, rhs, "-")

    def mul(self, lhs: Any, rhs: Any) -> Any:
        return self._arithmetic(ast.Mul, lhs, rhs, "*")

    def div(self, lhs: Any, rhs: Any) -> Any:
        return self._arithmetic(ast.Div, lhs, rhs, "/")

    def unsupported_mod(self, *_: Any) -> Any:
        raise Cql2TextRefused("the % (remainder) operator is not supported")

    def unsupported_div(self, *_: Any) -> Any:
        raise Cql2TextRefused("the DIV (integer division) operator is not supported")

    def unsupported_pow(self, *_: Any) -> Any:
        raise Cql2TextRefused("the ^ (power) operator is not supported")

    def neg(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        return ast.Mul(-1, _scalar(value, "-"))

    def pos(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Cql2TextError("unary + needs a number")
        return value

    def number(self, token: Token) -> int | float:
        text = str(token)
        try:
            value = int(text) if text.isdigit() else float(text)
        except ValueError:  # int() refuses more than 4,300 digits
            raise Cql2TextRefused(f"the number {text[:20]}… is too long") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise Cql2TextRefused(f"the number {text[:40]} is out of range")
        return value

    def string(self, token: Token) -> str:
        return str(token)[1:-1].replace("''", "'")  # CQL2's only escape; a backslash is an ordinary character

    def true(self, _token: Token) -> bool:
        return True

    def false(self, _token: Token) -> bool:
        return False

    def attribute(self, token: Token) -> Any:
        return ast.Attribute(str(token))

    def quoted_attribute(self, token: Token) -> Any:
        return ast.Attribute(str(token)[1:-1].replace('""', '"'))

    def arguments(self, *items: Any) -> list[Any]:
        return list(items)

    def function(self, name_token: Token, arguments: list[Any] | None) -> Any:
        name, args = str(name_token), arguments or []
        key = name.lower()
        if key in ("casei", "accenti"):
            if len(args) != 1:
                raise Cql2TextError(f"{name.upper()} takes one argument")
            if key == "accenti":
                raise Cql2TextRefused("ACCENTI (accent-insensitive comparison) is not supported")
            return ast.Function("lower", [_scalar(args[0], "CASEI")])
        if key in ("date", "timestamp"):
            if len(args) != 1:
                raise Cql2TextError(f"{name.upper()} takes one quoted value")
            return _instant(args[0], key.upper())
        if key == "interval":
            if len(args) != 2:
                raise Cql2TextError("INTERVAL takes a start and an end")
            return values.Interval(*(_instant(v.isoformat() if isinstance(v, dt.date) else v, "INTERVAL")
                                     for v in args))
        if key == "bbox":
            if len(args) not in (4, 6):
                raise Cql2TextError("BBOX takes 4 or 6 numbers")
            return ast.Function("bbox", [_number(v, "BBOX") for v in args])
        if key.startswith(("a_", "s_", "t_")):
            raise Cql2TextRefused(f"{name[:40].upper()} is not supported")
        return ast.Function(name, [_scalar(a, name[:40]) for a in args])

    # --- WKT geometry literals (GeoJSON, as the CQL2 JSON parser holds them) --------------------------
    def signed(self, token: Token) -> float:
        return float(str(token))

    def negative(self, token: Token) -> float:
        return -float(str(token))

    def coordinate(self, *numbers: float) -> list[float]:
        return list(numbers)

    def coordinates(self, *items: list[float]) -> list[list[float]]:
        return list(items)

    def ring(self, coordinates: list[list[float]]) -> list[list[float]]:
        return coordinates

    def rings(self, *items: Any) -> list[Any]:
        return list(items)

    def polygons(self, *items: Any) -> list[Any]:
        return list(items)

    def point_item(self, coordinate: list[float]) -> list[float]:
        return coordinate

    def points(self, *items: list[float]) -> list[list[float]]:
        return list(items)

    def point(self, _kw: Token, coordinate: list[float]) -> values.Geometry:
        return values.Geometry({"type": "Point", "coordinates": coordinate})

    def linestring(self, _kw: Token, coordinates: list[Any]) -> values.Geometry:
        return values.Geometry({"type": "LineString", "coordinates": coordinates})

    def polygon(self, _kw: Token, rings: list[Any]) -> values.Geometry:
        return values.Geometry({"type": "Polygon", "coordinates": rings})

    def multipoint(self, _kw: Token, points: list[Any]) -> values.Geometry:
        return values.Geometry({"type": "MultiPoint", "coordinates": points})

    def multilinestring(self, _kw: Token, lines: list[Any]) -> values.Geometry:
        return values.Geometry({"type": "MultiLineString", "coordinates": lines})

    def multipolygon(self, _kw: Token, polygons: list[Any]) -> values.Geometry:
        return values.Geometry({"type": "MultiPolygon", "coordinates": polygons})

    def geometrycollection(self, _kw: Token, *members: values.Geometry) -> values.Geometry:
        return values.Geometry({"type": "GeometryCollection", "geometries": [m.geometry for m in members]})


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", transformer=_ToAst(), maybe_placeholders=True)


def _nesting(text: str) -> int:
    """The deepest nesting of parentheses outside quoted strings and identifiers."""
    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""  # a doubled quote closes and reopens: same depth either way
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _describe(exc: UnexpectedInput, text: str) -> str:
    """A one-line description of a lark syntax error."""
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        return "unexpected end of text"
    column = getattr(exc, "column", "?")
    if isinstance(exc, UnexpectedToken):
        found = str(exc.token)
    elif isinstance(exc, UnexpectedCharacters):
        position = exc.pos_in_stream or 0
        found = text[position:position + 1]
    else:
        found = ""
    return f"unexpected {found[:30]!r} at column {column}"


def parse(text: str) -> Any:
    """Parse CQL2 text into a pygeofilter syntax tree.

    Parameters
    ----------
    text
        The filter, at most :data:`MAX_CHARS` characters.

    Returns
    -------
    Any
        A pygeofilter node (``ast.Node``), or ``True``/``False`` for a filter that is only a boolean literal.

    Raises
    ------
    Cql2TextRefused
        For valid CQL2 the server does not support (``ACCENTI``, ``DIV``, ``%``, ``^``, array functions,
        ``INTERVAL`` of properties) and for text too long or nested deeper than :data:`MAX_NESTING`.
    Cql2TextError
        For text that is not CQL2 (a one-line message with the column of the first unexpected token).
    """
    if len(text) > MAX_CHARS:
        raise Cql2TextRefused(f"longer than {MAX_CHARS} characters")
    if "\x00" in text:
        raise Cql2TextRefused("contains a NUL character")
    if _nesting(text) > MAX_NESTING:
        raise Cql2TextRefused(f"parentheses nested more than {MAX_NESTING} deep")
    try:
        tree = _parser().parse(text)
    except VisitError as exc:
        if isinstance(exc.orig_exc, Cql2TextError):
            raise exc.orig_exc from None
        raise Cql2TextError(f"cannot read: {type(exc.orig_exc).__name__}") from exc
    except UnexpectedInput as exc:
        raise Cql2TextError(_describe(exc, text)) from None
    except Cql2TextError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a callback's failure: one line
        raise Cql2TextError(f"cannot read: {type(exc).__name__}") from None
    return _condition(tree, "a filter")
