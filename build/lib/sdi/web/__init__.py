"""sdi's web layer: the OGC API application (:mod:`sdi.web.app`), its per-worker runtime and its routes."""
