"""What every SDI client shares: the layer list, argument checks and typed GeoDataFrames.

:class:`Client` is the interface of :func:`sdi.connect` (a local PostGIS database) and
:func:`sdi.remote.connect` (a running ``sdi serve``). Both build their result with :func:`typed_frame`
from the same JSON Schema field types, so the same query returns equal GeoDataFrames: same column
order, dtypes and ``RangeIndex`` (rows ordered by the layer's primary key).
"""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sdi.errors import ConfigError, LayerNotFoundError

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

    from sdi.catalogue.models import CatalogueRecord, SearchResult

DEFAULT_CRS = "EPSG:2326"
GEOMETRY = "geometry"  #: name of the geometry column of every frame a client returns


@dataclass(frozen=True)
class LayerInfo:
    """One loaded layer as a client lists it."""

    id: str
    title_en: str
    title_zh: str | None
    kind: str  #: ``"vector"`` or ``"raster"``
    geometry_type: str | None
    count: int  #: features (vector) or cells (raster)
    synthetic: bool = False

    @property
    def type(self) -> str:
        """The geometry type of a vector layer (``"Point"``, ``"MultiPolygon"``...) or ``"raster"``."""
        return self.geometry_type or self.kind

    @classmethod
    def from_record(cls, record: CatalogueRecord) -> LayerInfo:
        """The layer described by its catalogue record."""
        return cls(record.id, record.title_en, record.title_zh, record.kind, record.geometry_type,
                   record.feature_count, record.synthetic)


class Layers(Mapping[str, LayerInfo]):
    """The loaded layers by id (in id order), shown as a bilingual table in Jupyter."""

    def __init__(self, layers: Sequence[LayerInfo]) -> None:
        self._layers = {layer.id: layer for layer in sorted(layers, key=lambda info: info.id)}

    def __getitem__(self, layer_id: str) -> LayerInfo:
        try:
            return self._layers[layer_id]
        except KeyError:
            raise LayerNotFoundError(f"layer: no layer {layer_id!r}; loaded layers: {', '.join(self._layers)}") \
                from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"<Layers: {len(self)} layer(s): {', '.join(self._layers)}>"

    def to_frame(self) -> pd.DataFrame:
        """The layers as a pandas DataFrame indexed by id."""
        import pandas as pd

        rows = [{"id": i.id, "title_en": i.title_en, "title_zh": i.title_zh, "type": i.type, "count": i.count,
                 "synthetic": i.synthetic} for i in self._layers.values()]
        return pd.DataFrame(rows, columns=["id", "title_en", "title_zh", "type", "count", "synthetic"]).set_index("id")

    def _repr_html_(self) -> str:
        e = html.escape
        badge = " <span style='color:#b45309'>[synthetic 合成]</span>"
        rows = "".join(
            f"<tr><td><code>{e(i.id)}</code></td><td>{e(i.title_en)}{badge if i.synthetic else ''}<br>"
            f"{e(i.title_zh or '')}</td><td>{e(i.type)}</td><td style='text-align:right'>{i.count:,}</td></tr>"
            for i in self._layers.values())
        return (f"<div><b>{len(self)} layer(s) / 圖層</b><table><tr><th>id</th><th>title / 標題</th>"
                f"<th>type / 類型</th><th>count / 數量</th></tr>{rows}</table></div>")


class CatalogueLike(Protocol):
    """What ``client.catalogue`` offers: :meth:`sdi.catalogue.Catalogue.search` and ``get``."""

    def search(self, q: str | None = None, bbox: str | Sequence[float] | None = None, custodian: str | None = None,
               theme: str | None = None, lang: str | None = None, limit: int = 10, offset: int = 0,
               kind: str | None = None, synthetic: bool | None = None) -> SearchResult: ...

    def get(self, record_id: str) -> CatalogueRecord: ...


class Client(ABC):
    """An SDI: its catalogue, its layers and :meth:`read`, whether local (PostGIS) or remote (OGC API)."""

    catalogue: CatalogueLike

    @property
    @abstractmethod
    def layers(self) -> Layers:
        """The loaded (published) layers."""

    @abstractmethod
    def read(self, layer: str, bbox: Sequence[float] | None = None, where: str | None = None,
             columns: Sequence[str] | None = None, crs: str | int = DEFAULT_CRS, limit: int | None = None,
             *, progress: bool | None = None) -> gpd.GeoDataFrame:
        """Read features of a vector layer into a GeoDataFrame.

        Parameters
        ----------
        layer
            The layer id, e.g. ``"districts_18"``.
        bbox
            ``(minx, miny, maxx, maxy)`` in the coordinates of ``crs``, always x/y order (easting/northing,
            or longitude/latitude for EPSG:4326), whatever the CRS's official axis order. Features that
            intersect the box are returned.
        where
            A CQL text filter as the API's ``filter`` parameter takes it, e.g. ``"name_en LIKE '%PARK%' AND fid > 3"``
            or ``"INTERSECTS(geom, POINT(114.17 22.28))"``; the same string works locally and remotely.
            Geometry literals are longitude/latitude (CRS84).
        columns
            Attribute columns to return, in this order (default: all, in table order).
        crs
            Output CRS as an EPSG code (``"EPSG:4326"``, ``4326``) or an OGC CRS URI.
        limit
            At most this many features.
        progress
            Show a progress bar: ``None`` shows one when the read takes more than one page.

        Returns
        -------
        geopandas.GeoDataFrame
            Rows in primary-key order with a ``RangeIndex``, attribute columns then ``geometry``, in ``crs``.
        """


# --- shared argument checks and frame building ------------------------------------------------------------------


def output_epsg(crs: str | int) -> int:
    """The EPSG code of a requested output CRS; :class:`~sdi.errors.CrsError` if it has none."""
    from sdi.crs import epsg_code, parse_crs

    code = epsg_code(parse_crs(crs, what="crs"))
    assert code is not None  # parse_crs guarantees an EPSG code
    return code


def check_bbox(bbox: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """``bbox`` as four floats (minx, miny, maxx, maxy) in any CRS; :class:`ConfigError` when malformed."""
    from sdi.catalogue.search import parse_box

    return None if bbox is None else parse_box(bbox)


def check_limit(limit: int | None) -> int | None:
    """``limit`` when ``None`` or a positive integer; :class:`ConfigError` otherwise."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit: expected a positive integer, got {limit!r}")
    return limit


def check_columns(columns: Sequence[str] | None, fields: Mapping[str, Any], layer: str) -> list[str]:
    """The attribute columns to return: ``columns`` (checked against the layer's fields) or all fields."""
    if columns is None:
        return list(fields)
    if isinstance(columns, str):
        columns = [columns]
    unknown = [c for c in columns if c not in fields]
    if unknown:
        raise ConfigError(f"columns: layer {layer!r} has no column {unknown[0]!r}; columns: {', '.join(fields)}")
    return list(dict.fromkeys(columns))


def typed_frame(rows: Sequence[Sequence[Any]], columns: Sequence[str], schema: Mapping[str, Mapping[str, str]],
                geometries: Any, epsg: int) -> gpd.GeoDataFrame:
    """A GeoDataFrame with dtypes decided by each column's JSON Schema type, not by the values.

    Parameters
    ----------
    rows
        Attribute values, one sequence per feature, in ``columns`` order.
    columns
        Attribute column names.
    schema
        JSON Schema of each column (``{"type": "integer"}``, ``{"type": "string", "format": "date"}``...),
        as :func:`sdi.query.layer.json_schema_type` and the API's queryables give it.
    geometries
        Shapely geometries (or ``None``), one per feature, in x/y order.
    epsg
        Their CRS.

    Returns
    -------
    geopandas.GeoDataFrame
        ``integer`` → ``Int64``; ``number`` → ``float64``; ``boolean`` → ``boolean``; ``date`` → ``datetime64``;
        ``date-time`` → ``datetime64`` (in UTC when the values carry an offset); anything else → ``object``.
        ``RangeIndex``; the geometry column is ``geometry``.
    """
    import geopandas as gpd
    import pandas as pd

    # one object column per attribute first: from_records would turn integers with nulls into floats
    frame = pd.DataFrame({name: pd.Series([row[i] for row in rows], dtype=object) for i, name in enumerate(columns)},
                         index=pd.RangeIndex(len(rows)))
    for name in columns:
        spec = schema.get(name, {})
        kind, fmt = spec.get("type"), spec.get("format")
        values = frame[name]
        if kind == "integer":
            frame[name] = pd.array([None if pd.isna(v) else int(v) for v in values], dtype="Int64")
        elif kind == "number":
            frame[name] = pd.to_numeric(values.astype(object).where(values.notna(), None), errors="raise") \
                .astype("float64")
        elif kind == "boolean":
            frame[name] = pd.array(list(values), dtype="boolean")
        elif fmt in ("date", "date-time"):
            stamps = pd.to_datetime(values, format="ISO8601" if values.map(type).eq(str).any() else None)
            tz = getattr(stamps.dtype, "tz", None)
            frame[name] = stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]") if tz is not None \
                else stamps.astype("datetime64[ns]")
        else:
            frame[name] = values.astype(object).where(values.notna(), None)
    geometry = gpd.GeoSeries(list(geometries), index=frame.index, crs=f"EPSG:{epsg}", name=GEOMETRY)
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=f"EPSG:{epsg}")


def progress_bar(total: int, page_size: int, progress: bool | None, layer: str) -> Any:
    """A ``tqdm.auto`` bar over ``total`` features, shown when asked or when more than one page is read."""
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():  # without ipywidgets tqdm.auto falls back to text bars, and warns about it
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm

    show = progress if progress is not None else total > page_size
    return tqdm(total=total, unit="features", desc=layer, disable=not show)
