"""Access of a layer (public, or a list of groups) and group names: the one place their rules live."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sdi.errors import ConfigError

GROUP_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
_GROUP = re.compile(GROUP_PATTERN)
MAX_GROUPS = 64  #: most groups a layer (or a key) names
GroupName = Annotated[str, Field(pattern=GROUP_PATTERN)]


def check_group(name: str, what: str = "group") -> str:
    """``name`` if it is a valid group name (lower-case letter, then up to 39 of ``a-z 0-9 _``).

    Raises
    ------
    ConfigError
        Naming ``what`` and the rule.
    """
    if not isinstance(name, str) or not _GROUP.fullmatch(name):
        raise ConfigError(f"{what}: {str(name)[:50]!r} is not a group name (a lower-case letter, then up to 39 "
                          "lower-case letters, digits or _)")
    return name


def normalise_groups(names: Iterable[str], what: str = "groups") -> tuple[str, ...]:
    """Sorted, distinct, checked group names (:func:`check_group`); at most :data:`MAX_GROUPS`."""
    found = tuple(sorted({check_group(n.strip(), what) for n in names}))
    if len(found) > MAX_GROUPS:
        raise ConfigError(f"{what}: at most {MAX_GROUPS} groups, got {len(found)}")
    return found


class GroupAccess(BaseModel):
    """``access: {groups: [planning, lands]}``: only identities in one of these groups may read the layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: tuple[GroupName, ...] = Field(min_length=1, max_length=MAX_GROUPS)

    @field_validator("groups")
    @classmethod
    def _sorted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))


#: A layer definition's ``access``: ``public`` (the default) or the groups that may read it.
Access = Literal["public"] | GroupAccess


def access_groups(access: Access | None) -> tuple[str, ...] | None:
    """The groups of ``access``; ``None`` for a public layer (as ``sdi.layer.access_groups`` stores it)."""
    return None if access is None or access == "public" else access.groups


def may_read(layer_groups: Iterable[str] | None, identity_groups: frozenset[str]) -> bool:
    """Whether an identity of ``identity_groups`` may read a layer restricted to ``layer_groups`` (``None``:
    public)."""
    return layer_groups is None or not identity_groups.isdisjoint(layer_groups)
