"""Refuse server metadata that still holds placeholders (pygeoapi's sample values, example.org addresses...).

A base configuration (``sdi/web/base.yml`` or a deployer's copy) is what every page and the OpenAPI document
show as the service's provider and contact point; a postal code of zeros or an address at example.org would be
published as if true. :func:`check_server_metadata` is called wherever a base configuration is read
(:func:`sdi.publishing.config.read_base`, so by `sdi publish` and `sdi serve`), and names the first
offending field. Fields that cannot be filled truthfully are to be left out, not filled in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sdi.errors import ConfigError

__all__ = ["check_server_metadata", "placeholder_reason"]

#: Domains reserved for examples (RFC 2606 / RFC 6761), as a host or a host's last labels.
_EXAMPLE_HOST = re.compile(r"(^|\.)(example\.(org|com|net|edu)|example|invalid|test|localhost)$", re.IGNORECASE)
_HOST = re.compile(r"(?:@|//)([A-Za-z0-9.-]+)")
#: pygeoapi's sample configuration, field by field (``section.key`` under ``metadata``), compared case-insensitively:
#: "City" is a placeholder as ``contact.city``, but a keyword "city" is a keyword.
_SAMPLE_VALUES: dict[str, frozenset[str]] = {
    "identification.title": frozenset({"pygeoapi default instance"}),
    "identification.description": frozenset({"pygeoapi provides an api to geospatial data"}),
    "provider.name": frozenset({"organization name", "organisation name"}),
    "contact.name": frozenset({"lastname, firstname", "firstname lastname"}),
    "contact.position": frozenset({"position title"}),
    "contact.address": frozenset({"mailing address"}),
    "contact.city": frozenset({"city"}),
    "contact.stateorprovince": frozenset({"administrative area"}),
    "contact.postalcode": frozenset({"zip or postal code"}),
    "contact.country": frozenset({"country"}),
    "contact.url": frozenset({"contact url"}),
    "contact.hours": frozenset({"mo-fr 08:00-17:00"}),
    "contact.instructions": frozenset({"during hours of service. off on weekends."}),
}
#: Values that are a blank left unfilled in any field.
_UNFILLED = frozenset({"todo", "tbd", "changeme", "change me", "xxx"})
#: Sections whose fields name someone or somewhere: there "n/a", zeros or "your …" stand for a value not given.
_CONTACT_SECTIONS = ("contact", "provider", "license")
_CONTACT_PATTERNS = (
    (re.compile(r"^\W*0+\W*$"), "a number of zeros"),
    (re.compile(r"x{2,}-x{2,}", re.IGNORECASE), "a sample telephone number"),
    (re.compile(r"^(your|my)\s+\w+", re.IGNORECASE), "a fill-in-the-blank value"),
    (re.compile(r"^n/?a$", re.IGNORECASE), "a value not given"),
)
_TEMPLATE_SLOT = re.compile(r"^\s*(<[^>]*>|\{\{[^}]*\}\}|\$\{[^}]*\})\s*$")
_LOGO_KEYS = ("logo", "icon")


def placeholder_reason(value: str, field: str = "") -> str | None:
    """Why the text ``value`` of ``field`` is a placeholder (a short phrase), or ``None`` for a real value.

    Parameters
    ----------
    value
        The text (a number as its text).
    field
        Where it is, as ``section.key`` under ``metadata`` (``contact.city``, ``identification.keywords``);
        pygeoapi's sample values are placeholders only in their own field, and zeros, ``n/a`` or "your …"
        only under ``contact``, ``provider`` and ``license``. ``""`` checks only what is a placeholder anywhere.
    """
    text = value.strip()
    lowered = text.lower()
    if lowered in _SAMPLE_VALUES.get(field, frozenset()):
        return f"pygeoapi's sample value {text!r}"
    if lowered in _UNFILLED:
        return f"a blank left unfilled ({text!r})"
    if _TEMPLATE_SLOT.search(text):
        return f"a template slot ({text!r})"
    if field.split(".", 1)[0] in _CONTACT_SECTIONS:
        for pattern, what in _CONTACT_PATTERNS:
            if pattern.search(text):
                return f"{what} ({text!r})"
    for host in _HOST.findall(text):
        if _EXAMPLE_HOST.search(host.rstrip(".")):
            return f"an address at the reserved example domain {host!r}"
    return None


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``value`` with its dotted path (list items as ``[i]``, language variants as keys)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, str(value)


def _field(path: str) -> str:
    """``section.key`` of a dotted path under ``metadata`` (``metadata.contact.city`` → ``contact.city``)."""
    return ".".join(re.sub(r"\[\d+\]", "", path).split(".")[1:3])


def check_server_metadata(config: dict[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` if the server metadata of ``config`` still holds a placeholder.

    Every text under ``metadata`` (identification, licence, provider, contact, in each language) is checked
    against what is a placeholder in its field (:func:`placeholder_reason`), and ``server.logo`` /
    ``server.icon``, which must not be pygeoapi's own logo.

    Parameters
    ----------
    config
        A base configuration or a whole pygeoapi configuration (a mapping with ``server`` and ``metadata``).
    source
        Where ``config`` was read from (a file name), for the message.

    Raises
    ------
    ConfigError
        One line naming ``source``, the field (e.g. ``metadata.contact.postalcode``) and what is wrong.
    """
    for path, text in _strings(config.get("metadata") or {}, "metadata"):
        reason = placeholder_reason(text, _field(path))
        if reason:
            raise ConfigError(f"{source}: {path} is a placeholder ({reason}); give the real value or remove the "
                              f"field")
    server = config.get("server") or {}
    for key in _LOGO_KEYS:
        value = server.get(key) if isinstance(server, dict) else None
        if isinstance(value, str) and "pygeoapi" in value.lower():
            raise ConfigError(f"{source}: server.{key} is pygeoapi's own image ({value!r}); remove it to use the "
                              f"HK SDI one, or name your own")
        if isinstance(value, str) and (reason := placeholder_reason(value, f"server.{key}")):
            raise ConfigError(f"{source}: server.{key} is a placeholder ({reason}); give the real value or "
                              f"remove the field")
