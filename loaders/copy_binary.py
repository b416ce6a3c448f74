"""PostgreSQL binary COPY, encoded column-wise with Arrow (no per-row Python).

Each column becomes an Arrow binary array of ``<int32 length><value bytes>`` (``-1`` for NULL) in
the type's binary wire format; the fields of a row are joined by Arrow's C++ kernels and the
result's data buffer is the COPY payload. Geometries go as EWKB (``geometry_recv`` reads it
directly), which halves the bytes against hex text and skips text parsing on the server.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from loaders.report import FieldInfo
from sdi.crs import HK_GRID

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
NULL = pa.scalar(struct.pack("!i", -1), type=pa.binary())
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
_PG_EPOCH_DATE = dt.date(2000, 1, 1)

#: WKB type codes of single geometries and their Multi* counterparts.
_MULTI_OF = {1: 4, 2: 5, 3: 6}


def _fixed(values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """Big-endian fixed-width values as a binary array; rows where ``valid`` is False become NULL."""
    width = values.dtype.itemsize
    raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values.tobytes())])
    out = raw.cast(pa.binary())
    if valid is not None and not valid.all():
        out = pc.if_else(pa.array(valid), out, pa.scalar(None, type=pa.binary()))
    return out


def prefixed(values: pa.Array) -> pa.Array:
    """Values of one column with their COPY length prefixes (int32 big-endian; NULL as length -1)."""
    lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False).astype(">i4")
    prefix = _fixed(lengths, None)
    joined = pc.binary_join_element_wise(prefix, values, b"")
    return pc.fill_null(joined, NULL)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _text(series: pd.Series) -> pa.Array:
    try:
        arr = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array(series.map(lambda v: None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
                                  else str(v)), type=pa.string(), from_pandas=True)
    return arr.cast(pa.binary())


def column_values(series: pd.Series, pg_type: str) -> pa.Array:
    """One column in PostgreSQL's binary format for ``pg_type`` (without length prefixes)."""
    valid = series.notna().to_numpy()
    if pg_type == "bigint":
        return _fixed(series.fillna(0).to_numpy(dtype="int64").astype(">i8"), valid)
    if pg_type == "double precision":
        return _fixed(series.to_numpy(dtype="float64", na_value=np.nan).astype(">f8"), valid)
    if pg_type == "boolean":
        return _fixed(series.fillna(False).to_numpy(dtype=bool).astype(np.uint8), valid)
    if pg_type == "date":
        days = series.map(lambda v: (v - _PG_EPOCH_DATE).days if isinstance(v, dt.date) else 0)
        return _fixed(days.to_numpy(dtype="int64").astype(">i4"), valid)
    if pg_type in ("timestamp", "timestamptz"):
        stamps = pd.to_datetime(series)
        if pg_type == "timestamptz":
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        micros = (stamps.to_numpy(dtype="datetime64[us]") - _PG_EPOCH).astype("int64")
        return _fixed(np.where(valid, micros, 0).astype(">i8"), valid)
    if pg_type == "jsonb":
        text = series.map(lambda v: None if v is None else "\x01" + json.dumps(v, ensure_ascii=False,
                                                                                default=_json_default))
        return pa.array(text, type=pa.string(), from_pandas=True).cast(pa.binary())
    return _text(series)


def _header(wkb_type: int, srid: int, promote: bool) -> bytes:
    """EWKB header (little-endian, SRID flag) for a WKB type code; a one-part Multi* wrapper when promoting."""
    if promote and wkb_type in _MULTI_OF:
        return struct.pack("<BII", 1, _MULTI_OF[wkb_type] | 0x20000000, srid) + struct.pack("<IBI", 1, 1, wkb_type)
    return struct.pack("<BII", 1, wkb_type | 0x20000000, srid)


#: GEOS type ids (shapely.get_type_id) → WKB type codes (a LinearRing is written as a LineString).
_WKB_OF_GEOS = np.array([1, 2, 2, 3, 4, 5, 6, 7], dtype=np.int8)


def ewkb(geoms: np.ndarray, promote: bool) -> pa.Array:
    """WKB of ``geoms`` for a ``geometry(…, 2326)`` column; with ``promote``, single parts become one-part Multi*.

    Without ``promote`` this is GEOS's plain WKB (little-endian, no SRID): a geometry with SRID 0 takes
    the column's SRID when PostGIS reads it, so nothing is rewritten. With ``promote`` it is EWKB
    (:func:`promoted`).
    """
    wkb = pa.array(shapely.to_wkb(geoms, byte_order=1, include_srid=False), type=pa.binary())
    return promoted(wkb, shapely.get_type_id(geoms).astype(np.int8)) if promote and len(wkb) else wkb


def promoted(wkb: pa.Array, codes: np.ndarray) -> pa.Array:
    """EWKB (SRID 2326) of plain little-endian WKB whose GEOS type ids are ``codes``, single parts as one-part Multi*.

    GEOS writes plain WKB (``01 <type> <body>``); the SRID and the Multi* wrapper are put in by
    rewriting that 5-byte header with Arrow kernels, instead of cloning every geometry to set its
    SRID or rebuild it as a collection:
    ``01 <type|SRID> <srid> <body>``, or ``01 <multi|SRID> <srid> 01000000 01 <type> <body>``.
    """
    if not len(wkb):
        return wkb
    headers = pa.array([_header(int(code), HK_GRID, True) for code in _WKB_OF_GEOS], type=pa.binary())
    longest = pc.max(pc.binary_length(wkb)).as_py() or 0  # binary_slice needs an explicit stop
    body = pc.binary_slice(wkb, 5, longest)
    return pc.binary_join_element_wise(headers.take(pa.array(codes)), body, b"")


def encode_columns(frame: pd.DataFrame, fields: list[FieldInfo]) -> list[pa.Array]:
    """Each attribute column of ``frame`` (in ``fields`` order) as length-prefixed binary COPY values."""
    return [prefixed(column_values(frame[f.name], f.type)) for f in fields]


def join_rows(columns: list[pa.Array]) -> bytes:
    """Binary COPY tuples from length-prefixed columns (the field count, then each column's value)."""
    count = pa.scalar(struct.pack("!h", len(columns)), type=pa.binary())
    rows = pc.binary_join_element_wise(count, *columns, b"")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
    data = rows.buffers()[2]
    return data.to_pybytes()[offsets[0]:offsets[-1]] if data is not None else b""


def encode_rows(frame: pd.DataFrame, fields: list[FieldInfo], geoms: np.ndarray, promote: bool) -> bytes:
    """Encode rows (attribute columns in ``fields`` order, then the geometry) as binary COPY tuples."""
    return join_rows([*encode_columns(frame, fields), prefixed(ewkb(geoms, promote))])
