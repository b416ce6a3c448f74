"""The engines behind :mod:`sdi.planning.joins`: PostGIS (SQL), GeoPandas (in memory) and Dask (partitioned).

:mod:`~sdi.planning.engines.frames` holds what all engines share: the description of a join
(:class:`~sdi.planning.engines.frames.Join`), matched row positions
(:class:`~sdi.planning.engines.frames.Pairs`) and the assembly of the result frame, so every engine
returns the same columns, order and types.
"""
