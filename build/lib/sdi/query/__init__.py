"""The query core of the OGC API and of :func:`sdi.connect`: typed request parameters and their SQL.

* :mod:`sdi.query.params` — query strings parsed into checked values (bbox and bbox-crs, crs, datetime,
  filter, sortby, properties, skipGeometry, limit/offset, property equality);
* :mod:`sdi.query.cql` — CQL2 text, CQL2 JSON and ECQL filters (pygeofilter) translated to SQL;
* :mod:`sdi.query.boxes` — boxes in any served CRS as exact EPSG:2326 polygons;
* :mod:`sdi.query.statements` — one SQL statement per page (count included) and per feature;
* :mod:`sdi.query.tms` — the tile matrix sets (WebMercatorQuad, HK80Grid) and the vector-tile statement;
* :mod:`sdi.query.layer` — what a query needs to know of a layer, from ``sdi.layer``.

Nothing here imports pygeoapi or a web framework.
"""
