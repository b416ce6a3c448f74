"""Readers and normalisers for departmental geodata: read → normalise → write into PostGIS (EPSG:2326)."""

from loaders.pipeline import load, normalise, read
from loaders.report import FieldInfo, LoadReport

__all__ = ["FieldInfo", "LoadReport", "load", "normalise", "read"]
