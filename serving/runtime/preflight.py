"""What a service checks before it starts anything: every file it will read, every port it will bind, the
checkpoint and the data directory.

Redis, Ray and the Serve applications take ~20 s to start, so a typo found after them costs that; here each
problem is one ``ValueError`` naming the option, the path or port and what is wrong, within a second.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.runtime.service import ServiceOptions


def check_service(options: ServiceOptions) -> None:
    """Raise ``ValueError`` with the first problem of ``options`` that would stop or break the service."""
    server = options.server
    if server.tokens_file:
        _readable(server.tokens_file, "--tokens-file")
        from serving.front.tenants import TenantRegistry

        TenantRegistry.from_file(server.tokens_file)  # loads it now: its errors say where
    if server.pacs_file:
        _readable(server.pacs_file, "--pacs-file")
        from serving.dicom.endpoints import load_pacs_file

        load_pacs_file(Path(server.pacs_file))  # and every secret file it names
    if server.tls_cert and server.tls_key:
        _tls_pair(server.tls_cert, server.tls_key)
    if options.checkpoint and not (Path(options.checkpoint) / "config.json").is_file():
        raise ValueError(f"--checkpoint {options.checkpoint}: no model checkpoint there (no config.json)")
    if options.redis_url is None and os.environ.get("REDIS_URL") is None and options.data_dir:
        _writable_directory(options.data_dir, "--data-dir")
    _free(server.address, "--address")
    if options.http is not None:
        _free(f"{options.http.host}:{options.http.port}", "--http")
    if options.metrics_port:
        _free(f"{options.metrics_address}:{options.metrics_port}", "--metrics-port")


def _readable(path: str, option: str) -> None:
    if not Path(path).is_file():
        raise ValueError(f"{option} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path}: not readable by this user")


def _tls_pair(cert: str, key: str) -> None:
    _readable(cert, "--tls-cert")
    _readable(key, "--tls-key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its private key "
                         f"({e.reason or e})") from None


def _writable_directory(path: str, option: str) -> None:
    directory = Path(path)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable by this user")


def _free(address: str, option: str) -> None:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option} {address}: expected HOST:PORT with a port number from 0 to 65535")
    if int(port) == 0:
        return  # the system picks a free one
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no conflict
        try:
            probe.bind((host, int(port)))
        except OSError as e:
            reason = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise ValueError(f"{option} {address}: cannot listen there ({reason})") from None
