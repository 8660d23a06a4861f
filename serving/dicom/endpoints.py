"""The PACS endpoints a server is configured with: one ``PacsEndpoint`` per DICOMweb service, read from the
endpoints file (YAML) and the secret files it names. ``serving.dicom.pacs`` has the format and the clients.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

PACS_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True)
class PacsEndpoint:
    """One PACS's DICOMweb service, as the server's configuration names it."""

    name: str
    url: str
    """The DICOMweb base URL, e.g. ``https://pacs.example/dicom-web`` (QIDO, WADO and STOW under it)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    """A bearer token, instead of a username and password."""
    ca_bundle: Path | None = None
    """A PEM file of the CAs that sign the PACS's certificate (None: certifi's bundle; the environment's
    REQUESTS_CA_BUNDLE, proxies and ~/.netrc are never used)."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    """The longest wait for the next bytes of an answer (not for the whole answer)."""
    retries: int = 3
    """Retries after a connection error, a timeout, or a 5xx / 429 answer (storing is idempotent)."""
    backoff_s: float = 0.5

    def __post_init__(self):
        if not PACS_NAME.fullmatch(self.name):
            raise ValueError(f"name must be 1-63 lowercase letters, digits, '.', '_' or '-', got {self.name!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0:  # .port checks it
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("url must hold no credentials, query or fragment (credentials go in files)")
        if (self.username is None) != (self.password is None) or (self.password and self.token):
            raise ValueError("give a username and a password, or a token, or neither")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("connect_timeout_s and read_timeout_s must be > 0")
        if not isinstance(self.retries, int) or not 0 <= self.retries <= 10 or self.backoff_s < 0:
            raise ValueError(f"retries must be 0..10 and backoff_s >= 0, got {self.retries} and {self.backoff_s}")


class PacsEntry(BaseModel):
    """One entry of the endpoints file as written (``serving.dicom.pacs`` shows the format): the types here, the
    values' meaning in ``PacsEndpoint``; the ``*_file`` paths are read into it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = ""
    url: str = ""
    username: str | None = None
    username_file: str | None = None
    password_file: str | None = None
    token_file: str | None = None
    ca_bundle: str | None = None
    # numbers as written; PacsEndpoint has the defaults and the ranges (a float of retries is refused there)
    connect_timeout_s: int | float = PacsEndpoint.connect_timeout_s
    read_timeout_s: int | float = PacsEndpoint.read_timeout_s
    retries: int | float = PacsEndpoint.retries
    backoff_s: int | float = PacsEndpoint.backoff_s


NUMBERS = ("connect_timeout_s", "read_timeout_s", "retries", "backoff_s")
FILES = ("username_file", "password_file", "token_file", "ca_bundle")


def _entry_error(error: ValidationError) -> str:
    """What an entry's refusal says (pydantic's own messages name types, not what the file should hold)."""
    problems = error.errors()
    if any(p["type"] in ("extra_forbidden", "model_type") for p in problems):
        return f"accepted keys are {', '.join(sorted(PacsEntry.model_fields))}"
    if problems[0]["loc"][0] in NUMBERS:
        return f"{', '.join(NUMBERS)} must be numbers"
    return "name, url, username and the file paths must be strings"


def load_pacs_file(path: Path) -> tuple[list[PacsEndpoint], tuple[Path, ...]]:
    """The endpoints the file lists and the secret files they read; refuses an entry it cannot use, saying where."""
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not YAML: {e}") from None
    entries = document.get("pacs") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path} must hold 'pacs:', a list of entries with at least 'name' and 'url'")
    endpoints: list[PacsEndpoint] = []
    secret_files: list[Path] = []
    for i, raw in enumerate(entries, 1):
        where = f"{path}, PACS {i}"
        try:
            entry = PacsEntry.model_validate(raw)
        except ValidationError as e:
            raise ValueError(f"{where}: {_entry_error(e)}") from None
        if any(entry.name == e.name for e in endpoints):
            raise ValueError(f"{where}: the name {entry.name!r} is another entry's")
        if entry.username is not None and entry.username_file is not None:
            raise ValueError(f"{where}: give username or username_file, not both")
        files = {k: path.parent / getattr(entry, k) for k in FILES
                 if getattr(entry, k) is not None}  # an absolute path stays as it is
        secrets = {k.removesuffix("_file"): _read_secret(f, f"{where}: {k}") for k, f in files.items()
                   if k != "ca_bundle"}
        if "ca_bundle" in files and not files["ca_bundle"].is_file():
            raise ValueError(f"{where}: ca_bundle {files['ca_bundle']} is not a file")
        try:
            endpoint = PacsEndpoint(name=entry.name, url=entry.url,
                                    username=secrets.get("username", entry.username),
                                    password=secrets.get("password"), token=secrets.get("token"),
                                    ca_bundle=files.get("ca_bundle"),
                                    **entry.model_dump(include=set(NUMBERS), exclude_unset=True))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if endpoint.url.startswith("http://") and (endpoint.password or endpoint.token):
            log.warning("%s: PACS '%s' gets its credentials over plain http", where, endpoint.name)
        endpoints.append(endpoint)
        secret_files += [f for k, f in files.items() if k != "ca_bundle"]
    return endpoints, tuple(secret_files)


def _read_secret(file: Path, where: str) -> str:
    try:
        value = file.read_text().rstrip("\r\n")  # a Secret made with `echo` ends in a newline
    except OSError as e:
        raise ValueError(f"{where}: {file} cannot be read ({e.strerror})") from None
    if not value:
        raise ValueError(f"{where}: {file} is empty")
    return value
