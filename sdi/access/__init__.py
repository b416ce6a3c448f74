"""Restricted layers: who may read what (layer access, identities from API keys and OIDC tokens, database roles)."""
