"""Who is calling: tenants, the hashes of their bearer tokens, and their limits.

A tokens file (YAML; on Kubernetes a Secret mounted as a file) lists the tenants:

    tenants:
      - name: st-marys-pacs                 # lowercase letters, digits, '.', '_', '-'
        token_sha256: "5e884898da2804..."    # SHA-256 of the bearer token, hex: the file holds no token
        max_sessions: 500                   # live sessions at once (optional; default no limit)
        max_rounds_in_flight: 8             # rounds computing at once, per front process (optional)
        pacs: [st-marys]                    # the configured PACS it may fetch from and export to (optional;
                                            # default none, "*" all): a PACS holds other tenants' patients

``mediround token NAME`` makes a token and prints its entry. Tokens are 256-bit random strings, so a
plain SHA-256 is a safe way to keep them; every entry is compared in constant time, whichever matches.
The file is read again when it changes (``serving.reloading``: a rotated Secret takes effect without a restart;
a version that does not parse is refused with an error in the log, and the tenants before it still apply); a tenant may
have several entries, one per token, so that a new token can be handed out before the old one is removed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.reloading import Reloading

log = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
TOKEN_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Tenant:
    """A caller that owns sessions; another tenant's sessions do not exist for it."""

    name: str
    max_sessions: int = 0
    """Live sessions at once (0: no limit)."""
    max_rounds_in_flight: int = 0
    """Rounds computing at once in one front process (0: only the server's own limit)."""
    pacs: tuple[str, ...] | None = None
    """The configured PACS (by name) it may fetch from and store to; None: every one (a server without a tokens
    file has one trust domain); "*" among them: every one."""

    def may_use_pacs(self, name: str) -> bool:
        return self.pacs is None or "*" in self.pacs or name in self.pacs


ANONYMOUS = Tenant("")
"""The one tenant of a server that asks for no token."""

current_tenant: ContextVar[Tenant] = ContextVar("current_tenant", default=ANONYMOUS)
"""The authenticated caller of the call being served (set by the server's interceptor)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class TenantRegistry:
    """Bearer token -> ``Tenant``, from a tokens file (re-read when it changes) or a single token."""

    def __init__(self, tenants: dict[str, Tenant] | Reloading[dict[str, Tenant]]):
        self._tenants = tenants

    @classmethod
    def single(cls, token: str, name: str = "default") -> TenantRegistry:
        """One tenant holding ``token`` (``mediround serve --token``)."""
        return cls({token_hash(token): Tenant(name)})

    @classmethod
    def from_file(cls, path: str | Path) -> TenantRegistry:
        """The tenants of a tokens file, read again when it changes."""
        return cls(Reloading(Path(path), _load_tokens_file, what="tokens file", log=log,
                             describe=lambda tenants: f"{len(tenants)} tokens"))

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant whose token ``authorization`` ("Bearer <token>") carries, or None."""
        tenants = self._tenants.get() if isinstance(self._tenants, Reloading) else self._tenants
        scheme, _, token = (authorization or "").partition(" ")
        if not token.strip():
            return None
        presented = token_hash(token.strip()).encode()
        found = None
        for digest, tenant in tenants.items():  # all of them, whichever matches: constant time
            if hmac.compare_digest(presented, digest.encode()) and scheme.lower() == "bearer":
                found = tenant
        return found


def _load_tokens_file(path: Path) -> tuple[dict[str, Tenant], tuple[Path, ...]]:
    return parse_tokens_file(path.read_text(), str(path)), ()


class TenantEntry(BaseModel):
    """One entry of the tokens file (the module docstring shows the format)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=f"^{TENANT_NAME.pattern}$")
    token_sha256: str = Field(pattern=f"^{TOKEN_HASH.pattern}$")
    """Hex, either case: stored lowercase."""
    max_sessions: int = Field(0, ge=0)
    max_rounds_in_flight: int = Field(0, ge=0)
    pacs: list[str] = []

    @field_validator("token_sha256", mode="before")
    @classmethod
    def _lowercase(cls, value):
        return value.lower() if isinstance(value, str) else value

    @field_validator("pacs")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        if not all(value):
            raise ValueError("empty PACS name")
        return value

    def tenant(self) -> Tenant:
        return Tenant(self.name, max_sessions=self.max_sessions, max_rounds_in_flight=self.max_rounds_in_flight,
                      pacs=tuple(sorted(set(self.pacs))))


ENTRY_ERRORS = {
    "name": "name must be 1-63 lowercase letters, digits, '.', '_' or '-'",
    "token_sha256": "token_sha256 must be the 64 hex digits of the token's SHA-256, quoted (mediround token NAME "
                    "prints the entry)",
    "max_sessions": "max_sessions and max_rounds_in_flight are whole numbers >= 0",
    "max_rounds_in_flight": "max_sessions and max_rounds_in_flight are whole numbers >= 0",
    "pacs": 'pacs is a list of configured PACS names (or "*" for all of them)',
}
"""What each field's refusal says (pydantic's own messages name types, not what the file should hold)."""


def _entry_error(error: ValidationError) -> str:
    problems = error.errors()
    if any(p["type"] in ("extra_forbidden", "model_type") for p in problems):
        return f"accepted keys are {', '.join(TenantEntry.model_fields)}"
    return ENTRY_ERRORS[str(problems[0]["loc"][0])]


def parse_tokens_file(text: str, source: str = "the tokens file") -> dict[str, Tenant]:
    """token hash -> tenant; refuses a file that is not what the module docstring shows, saying where."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{source} is not YAML: {e}") from None
    entries = document.get("tenants") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source} must hold 'tenants:', a list of entries with 'name' and 'token_sha256'")
    tenants: dict[str, Tenant] = {}
    names: dict[str, Tenant] = {}
    for i, raw in enumerate(entries, 1):
        where = f"{source}, tenant {i}"
        try:
            entry = TenantEntry.model_validate(raw)
        except ValidationError as e:
            raise ValueError(f"{where}: {_entry_error(e)}") from None
        if entry.token_sha256 in tenants:
            raise ValueError(f"{where}: that token hash is already another entry's")
        tenant = entry.tenant()
        if names.setdefault(entry.name, tenant) != tenant:  # a tenant's tokens (old and new, mid-rotation) agree
            raise ValueError(f"{where}: '{entry.name}' has another entry with other limits; one tenant, one set of "
                             "limits")
        tenants[entry.token_sha256] = tenant
    return tenants
