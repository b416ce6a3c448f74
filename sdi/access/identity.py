"""Who a request is: anonymous, an API key or an OIDC token; the web layer's current identity.

The API sets :data:`CURRENT` for each request (``sdi.web.auth``); everything that request does (its queries,
the pygeoapi calls it makes in worker threads, the jobs it starts) sees it, because context variables follow
tasks and threads started from the request. :data:`SYSTEM` is the worker's own work (the registry of all
layers, job clean-up), never a request's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from sdi.access.groups import may_read

Kind = Literal["anonymous", "key", "token", "system"]


@dataclass(frozen=True)
class Identity:
    """A caller of the API.

    Attributes
    ----------
    kind
        ``anonymous``, ``key`` (an API key), ``token`` (an OIDC bearer token) or ``system`` (the worker itself).
    id
        Stable and unique: ``anonymous``, ``key:<key id>``, ``oidc:<issuer>#<subject>`` or ``system``; owns jobs
        and names the caller in the audit log.
    name
        What people call it: the key's name, the token's user name.
    groups
        The groups it belongs to (for a token, its groups claim).
    rate_limit
        Requests per minute it may make (``None``: the server's default for its kind).
    """

    kind: Kind
    id: str
    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    rate_limit: int | None = None

    @property
    def authenticated(self) -> bool:
        """Whether it came with a key or a token."""
        return self.kind in ("key", "token")

    def may_read(self, layer_groups: tuple[str, ...] | list[str] | None) -> bool:
        """Whether it may read a layer restricted to ``layer_groups`` (``None``: public). The system may."""
        return self.kind == "system" or may_read(layer_groups, self.groups)


ANONYMOUS = Identity("anonymous", "anonymous", "anonymous")
SYSTEM = Identity("system", "system", "system")
#: The identity of the request being served (anonymous unless the API set it).
CURRENT: contextvars.ContextVar[Identity] = contextvars.ContextVar("sdi_identity", default=ANONYMOUS)


def current() -> Identity:
    """The identity of the request being served."""
    return CURRENT.get()


@contextmanager
def acting_as(identity: Identity) -> Iterator[Identity]:
    """Run the block as ``identity`` (restored after)."""
    token = CURRENT.set(identity)
    try:
        yield identity
    finally:
        CURRENT.reset(token)
