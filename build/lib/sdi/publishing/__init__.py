"""OGC API publishing through pygeoapi: configuration from the catalogue, sdi's providers, the server."""
