"""pygeoapi ``feature`` provider for ``layers.<id>``: a thin adapter over the query core (:mod:`sdi.query`).

``sdi serve`` answers items itself (:mod:`sdi.web.features`); this adapter is what pygeoapi sees where it
still works with feature collections (its OpenAPI generator) and what stock pygeoapi runs with a
configuration written by ``sdi publish``::

    providers:
      - type: feature
        name: sdi.publishing.features.SdiFeatureProvider
        data: env                    # SDI_DATABASE_URL; or a libpq URL
        table: public_libraries_2013 # the layer id

Served by sdi, the provider definition also carries the worker's ``runtime``: layer metadata then comes from its
registry and SQL runs on its pool. pygeoapi hands over ``bbox`` already transformed to the storage CRS through
two corners, in that CRS's axis order (northing first for EPSG:2326); geometry literals of a ``filter`` arrive
transformed and tagged with their CRS, which :mod:`sdi.query.cql` reads.
"""

from __future__ import annotations

import json
import os
from typing import Any

import psycopg
from pygeoapi.provider.base import (
    BaseProvider,
    ProviderConnectionError,
    ProviderInvalidQueryError,
    ProviderItemNotFoundError,
)

from sdi.access.roles import as_public
from sdi.crs import CRS84_URI, STORAGE_CRS_URI, uri_crs
from sdi.errors import QueryError, SdiError
from sdi.query.layer import LayerMeta
from sdi.query.params import Box, ItemQuery, ItemsQuery, SortKey, feature_key, parse_datetime
from sdi.query.statements import Statement, item_statement, page_statement

STORAGE_CRS = STORAGE_CRS_URI


class SdiFeatureProvider(BaseProvider):
    """pygeoapi feature provider for one HK SDI layer (``layers.<table>``)."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        """Read the provider definition; no database work happens here."""
        super().__init__(provider_def)
        self.runtime = provider_def.get("runtime")
        self.table = str(provider_def["table"])
        self.url = os.environ.get("SDI_DATABASE_URL", "postgresql:///sdi") if self.data == "env" else str(self.data)
        self._layer: LayerMeta | None = None

    def _meta(self) -> LayerMeta:
        if self._layer is None:
            if self.runtime is not None:
                found = self.runtime.state["registry"].snapshot.layers.get(self.table)
            else:
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                        found = LayerMeta.read(as_public(conn), self.table)
                except psycopg.OperationalError as exc:
                    raise ProviderConnectionError(user_msg="the feature database is unreachable") from exc
            if not isinstance(found, LayerMeta):
                raise ProviderConnectionError(user_msg=f"layer {self.table!r} is not loaded")
            self._layer = found
        return self._layer

    def _rows(self, statement: Statement) -> list[Any]:
        try:
            if self.runtime is not None:
                return list(self.runtime.run_sync(self._fetch_pooled(statement)))
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                return list(as_public(conn).execute(statement.query, statement.params).fetchall())
        except QueryError as exc:
            raise ProviderInvalidQueryError(user_msg=str(exc)) from exc
        except (SdiError, psycopg.OperationalError) as exc:
            raise ProviderConnectionError(user_msg="the feature database is unreachable") from exc
        except psycopg.Error as exc:
            raise ProviderInvalidQueryError(user_msg="the query cannot run on this layer") from exc

    async def _fetch_pooled(self, statement: Statement) -> list[Any]:
        async with self.runtime.connection() as conn:  # type: ignore[union-attr]
            return list(await (await conn.execute(statement.query, statement.params)).fetchall())

    @property
    def fields(self) -> dict[str, dict[str, str]]:
        """Queryable properties and their JSON Schema types."""
        return self.get_fields()

    def get_fields(self) -> dict[str, dict[str, str]]:
        """The layer's properties mapped to JSON Schema types."""
        return self._meta().schema()

    def query(self, offset: int = 0, limit: int = 10, resulttype: str = "results", bbox: list[float] | None = None,
              datetime_: str | None = None, properties: list[tuple[str, Any]] | None = None,
              sortby: list[dict[str, str]] | None = None, select_properties: list[str] | None = None,
              skip_geometry: bool = False, q: str | None = None, filterq: Any = None,
              crs_transform_spec: Any = None, **kwargs: Any) -> dict[str, Any]:
        """One page of features as a GeoJSON FeatureCollection dict (see the module docstring for ``bbox``)."""
        layer = self._meta()
        try:
            box = None
            if bbox:
                n0, e0, n1, e1 = (float(bbox[i]) for i in (0, 1, len(bbox) // 2, len(bbox) // 2 + 1))
                box = Box(e0, n0, e1, n1, uri_crs(STORAGE_CRS))
            query = ItemsQuery(
                limit=int(limit), offset=int(offset), bbox=box,
                crs=uri_crs(crs_transform_spec.target_crs_uri if crs_transform_spec else STORAGE_CRS),
                datetime=parse_datetime(datetime_) if datetime_ else None, filter=filterq,
                filter_crs=STORAGE_CRS if filterq is not None else CRS84_URI,
                sortby=tuple(SortKey(s["property"], s.get("order") == "-") for s in sortby or []),
                properties=tuple(select_properties) if select_properties else None,
                skip_geometry=skip_geometry, equals=tuple(properties or ()), q=q, hits=resulttype == "hits")
            statement = page_statement(layer, query)
        except SdiError as exc:
            raise ProviderInvalidQueryError(user_msg=str(exc)) from exc
        rows = self._rows(statement)
        features = [json.loads(f"[{row[2]}]") for row in rows if row[2]]
        matched = int(rows[0][0]) if rows else 0
        page = [f for chunk in features for f in chunk] if resulttype != "hits" else []
        return {"type": "FeatureCollection", "features": page, "numberMatched": matched,
                "numberReturned": len(page)}

    def get(self, identifier: Any, crs_transform_spec: Any = None, **kwargs: Any) -> dict[str, Any]:
        """One feature by primary key, in the requested CRS; :class:`ProviderItemNotFoundError` when absent."""
        layer = self._meta()
        key = feature_key(layer, str(identifier))
        crs = uri_crs(crs_transform_spec.target_crs_uri if crs_transform_spec else STORAGE_CRS)
        rows = self._rows(item_statement(layer, key, ItemQuery(crs))) if key is not None else []
        if not rows:
            raise ProviderItemNotFoundError(user_msg=f"no feature {identifier!r}")
        return dict(json.loads(rows[0][0]))

    def __repr__(self) -> str:
        return f"<SdiFeatureProvider layers.{self.table}>"
