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
The file is read again when it changes (a rotated Secret takes effect without a restart; a version that
does not parse is refused with an error in the log, and the tenants before it still apply); a tenant may
have several entries, one per token, so that a new token can be handed out before the old one is removed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import yaml

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

    def __init__(self, tenants: dict[str, Tenant], *, path: Path | None = None):
        self._tenants, self.path = tenants, path
        self._stamp, self._checked = self._file_stamp(), time.monotonic()

    @classmethod
    def single(cls, token: str, name: str = "default") -> TenantRegistry:
        """One tenant holding ``token`` (``mediround serve --token``)."""
        return cls({token_hash(token): Tenant(name)})

    @classmethod
    def from_file(cls, path: str | Path) -> TenantRegistry:
        path = Path(path)
        return cls(parse_tokens_file(path.read_text(), str(path)), path=path)

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant whose token ``authorization`` ("Bearer <token>") carries, or None."""
        self._reload_if_changed()
        scheme, _, token = (authorization or "").partition(" ")
        if not token.strip():
            return None
        presented = token_hash(token.strip()).encode()
        found = None
        for digest, tenant in self._tenants.items():  # all of them, whichever matches: constant time
            if hmac.compare_digest(presented, digest.encode()) and scheme.lower() == "bearer":
                found = tenant
        return found

    def _file_stamp(self) -> int | None:
        return os.stat(self.path).st_mtime_ns if self.path else None

    def _reload_if_changed(self) -> None:
        if self.path is None or time.monotonic() - self._checked < 2.0:
            return
        self._checked = time.monotonic()
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp  # read each version once, whether it parses or not
            self._tenants = parse_tokens_file(self.path.read_text(), str(self.path))
            log.info("tokens file reloaded: %d tokens", len(self._tenants))
        except (OSError, ValueError) as e:  # the message names the file and the entry, never a token
            log.error("the changed tokens file was refused, the tenants loaded before still apply: %s", e)


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
    for i, entry in enumerate(entries, 1):
        where = f"{source}, tenant {i}"
        if not isinstance(entry, dict) or set(entry) - {"name", "token_sha256", "max_sessions",
                                                        "max_rounds_in_flight", "pacs"}:
            raise ValueError(f"{where}: accepted keys are name, token_sha256, max_sessions, max_rounds_in_flight, "
                             "pacs")
        name, digest = entry.get("name"), entry.get("token_sha256")
        if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
            raise ValueError(f"{where}: name must be 1-63 lowercase letters, digits, '.', '_' or '-'")
        if not isinstance(digest, str) or not TOKEN_HASH.fullmatch(digest.lower()):
            raise ValueError(f"{where}: token_sha256 must be the 64 hex digits of the token's SHA-256, quoted "
                             "(mediround token NAME prints the entry)")
        digest = digest.lower()
        if digest in tenants:
            raise ValueError(f"{where}: that token hash is already another entry's")
        limits = {k: entry.get(k, 0) for k in ("max_sessions", "max_rounds_in_flight")}
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in limits.values()):
            raise ValueError(f"{where}: max_sessions and max_rounds_in_flight are whole numbers >= 0")
        pacs = entry.get("pacs", [])
        if not isinstance(pacs, list) or not all(isinstance(p, str) and p for p in pacs):
            raise ValueError(f"{where}: pacs is a list of configured PACS names (or \"*\" for all of them)")
        tenant = Tenant(name, **limits, pacs=tuple(sorted(set(pacs))))
        if names.setdefault(name, tenant) != tenant:  # a tenant's tokens (old and new, mid-rotation) agree
            raise ValueError(f"{where}: '{name}' has another entry with other limits; one tenant, one set of limits")
        tenants[digest] = tenant
    return tenants
