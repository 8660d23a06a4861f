"""PACS endpoints configured on the server by name, and a DICOMweb client for each: fetch, store, find.

A client names a PACS, never gives its address: a URL from a client would let anyone make the server
fetch anything. The endpoints file (YAML; on Kubernetes a ConfigMap, its secrets a Secret mounted as a
directory) lists them:

    pacs:
      - name: st-marys                          # how clients name it: lowercase letters, digits, '.', '_', '-'
        url: https://pacs.st-marys.example/dicom-web
        username: mediround                     # basic auth: username (or username_file) and password_file,
        password_file: /etc/mediround/pacs/password
        # token_file: /etc/mediround/pacs/token # or a bearer token; or neither
        ca_bundle: /etc/mediround/pacs/ca.pem   # CAs that sign the PACS's certificate (default: certifi's)
        connect_timeout_s: 5                    # optional; these are the defaults
        read_timeout_s: 30
        retries: 3                              # on connection errors, timeouts, 5xx and 429
        backoff_s: 0.5                          # waits 1x, 2x, 4x... this before the retries

Relative paths are taken from the file's folder. The file and the secrets are read again when one of them
changes (``serving.reloading``: a rotated Secret takes effect without a restart; a version that does not load is
refused with an error in the log, and the endpoints before it still apply), as the tokens file is.

The calls block (requests); from asyncio, await the ``*_async`` forms, which run them in a thread. Errors are
``serving.errors``' Pacs* kinds (and ``DicomTooLarge``): their messages name the endpoint and never its
address, credentials or the instance's UIDs; the log gets one line per call: endpoint, operation, outcome,
bytes, milliseconds (UIDs are patient data too).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import pydicom
import requests
from dicomweb_client import DICOMwebClient

from serving.dicom.endpoints import PacsEndpoint, load_pacs_file
from serving.dicom.pixels import DEFAULT_LIMITS
from serving.errors import (
    DicomTooLarge,
    InvalidInstanceReference,
    PacsInstanceNotFound,
    PacsRefused,
    PacsUnavailable,
    UnknownPacs,
)
from serving.reloading import Reloading
from serving.retries import Backoff, retry

log = logging.getLogger(__name__)
# dicomweb-client logs UIDs at INFO and ERROR, URLs at DEBUG, and its retry package the errors, URLs in them;
# this module logs each call without them (only dicomweb-client uses `retrying`).
for _quiet in ("dicomweb_client", "retrying"):
    logging.getLogger(_quiet).setLevel(logging.CRITICAL)
T = TypeVar("T")

UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # as dicomweb-client checks (leading zeros are seen in the wild)
RETRIED_STATUSES = (429, 500, 502, 503, 504)
# Any transfer syntax: a PACS without a transcoder refuses to convert; decoding is done here, after the fetch.
# Uncompressed HTTP: Orthanc's gzip of a 0.5 MB CT took a fetch from 16 to 91 ms here (LAN bandwidth is cheaper).
FETCH_HEADERS = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
                 "Accept-Encoding": "identity"}
FAILURE_REASONS = {0x0110: "processing failure", 0x0122: "SOP class not supported", 0x0124: "not authorized",
                   0xA700: "out of resources", 0xA900: "data set does not match its SOP class",
                   0xC000: "cannot understand", 0xC122: "transfer syntax not supported"}
DUPLICATE_SOP_INSTANCE = 0x0111  # a PACS may "refuse" a second copy so: the instance is there, as asked


class PacsClient:
    """Fetch, store and find instances on one PACS (DICOMweb: WADO-RS, STOW-RS, QIDO-RS)."""

    def __init__(self, endpoint: PacsEndpoint):
        self.endpoint = endpoint
        self._url = endpoint.url.rstrip("/")
        self._timeout = (endpoint.connect_timeout_s, endpoint.read_timeout_s)
        session = requests.Session()
        # The endpoint says how to reach the PACS, the environment does not: REQUESTS_CA_BUNDLE would override
        # ca_bundle, a proxy would see the credentials, ~/.netrc would add others.
        session.trust_env = False
        session.verify = str(endpoint.ca_bundle) if endpoint.ca_bundle else True
        if endpoint.username is not None and endpoint.password is not None:  # both or neither (PacsEndpoint)
            session.auth = (endpoint.username, endpoint.password)
        if endpoint.token:
            session.headers["Authorization"] = f"Bearer {endpoint.token}"
        session.hooks["response"].append(self._note)
        self._session, self._seen = session, threading.local()
        # A STOW body goes whole, with its length (not every PACS takes a chunked upload); the retries are ours
        # (dicomweb-client's skip connection errors, urllib3's log the URL, and with it the UIDs).
        self._dicomweb = DICOMwebClient(self._url, session=session, timeout=self._timeout, chunk_size=2**62)
        self._dicomweb.set_http_retry_params(retry=False)

    def fetch_instance(self, study_uid: str, series_uid: str, sop_instance_uid: str, *,
                       max_bytes: int = DEFAULT_LIMITS.max_bytes) -> bytes:
        """The instance's Part-10 bytes, in whatever transfer syntax the PACS holds it; decoding is the caller's.

        Reads at most ``max_bytes`` of (decompressed) answer: more is ``DicomTooLarge``, and the rest is not read.
        """
        path = "/".join(("studies", _uid(study_uid), "series", _uid(series_uid), "instances", _uid(sop_instance_uid)))

        def get() -> bytes:
            # dicomweb-client's retrieve_instance parses the whole answer into a Dataset: here, raw bytes, bounded.
            with self._session.get(f"{self._url}/{path}", headers=FETCH_HEADERS, stream=True,
                                   timeout=self._timeout) as response:
                response.raise_for_status()
                if int(response.headers.get("Content-Length") or 0) > max_bytes:
                    raise self._too_large(max_bytes)
                body = bytearray()
                for chunk in response.iter_content(chunk_size=2**20):  # decompressed, if the PACS compressed anyway
                    body += chunk
                    if len(body) > max_bytes:
                        raise self._too_large(max_bytes)
                return _only_part(bytes(body), response.headers.get("Content-Type", ""))

        with self._call("fetch") as call:
            instance = self._retrying(call, get)
            call.nbytes = len(instance)
            if not instance:
                raise PacsInstanceNotFound(f"PACS '{self.endpoint.name}' has no such instance")
            if instance[128:132] != b"DICM":
                raise ValueError("not DICOM Part 10")
        return instance

    def store(self, dataset: pydicom.Dataset) -> str:
        """Store ``dataset`` in its study (STOW-RS); its SOP instance UID once stored.

        Idempotent: storing an instance whose SOP instance UID the PACS already holds is harmless (the PACS
        keeps one; Orthanc keeps the first content), which is what makes the retries safe.
        """
        study_uid = _uid(str(dataset.get("StudyInstanceUID", "")))
        sop_instance_uid = _uid(str(dataset.get("SOPInstanceUID", "")))

        def post() -> pydicom.Dataset:
            try:
                return self._dicomweb.store_instances([dataset], study_instance_uid=study_uid)
            except requests.HTTPError as e:
                response = cast(requests.Response, e.response)  # raise_for_status always sets it
                if response.status_code not in (400, 409):  # STOW's answers for a refused instance
                    raise
                return _json_dataset(response)

        with self._call("store") as call:
            result = self._retrying(call, post)
            call.nbytes = self._seen.sent
            items = result.get("FailedSOPSequence", [])
            failed = [item for item in items if item.get("FailureReason") != DUPLICATE_SOP_INSTANCE]
            if failed or (self._seen.status >= 400 and len(failed) == len(items)):
                reason = failed[0].get("FailureReason") if failed else None
                said = (f"failure reason 0x{reason:04X} ({FAILURE_REASONS.get(reason, 'unknown reason')})"
                        if isinstance(reason, int) else f"HTTP {self._seen.status}")
                raise PacsRefused(f"PACS '{self.endpoint.name}' refused to store the instance: {said}")
        return sop_instance_uid

    def find_instances(self, study_uid: str, *, modality: str | None = None) -> list[FoundInstance]:
        """The study's instances (QIDO-RS), of one modality if given (e.g. "SEG"); [] for a study it lacks.

        One request: as many as the PACS answers at once (paging with ``offset`` loops forever on a PACS that
        ignores it, and a study's instances of one modality are few)."""
        study_uid, filters = _uid(study_uid), {"Modality": modality} if modality else {}
        with self._call("find") as call:
            found = self._retrying(call, lambda: self._dicomweb.search_for_instances(
                study_instance_uid=study_uid, search_filters=filters))
            call.nbytes = self._seen.received
            return [FoundInstance.from_json(item) for item in found]

    async def fetch_instance_async(self, study_uid: str, series_uid: str, sop_instance_uid: str, *,
                                   max_bytes: int = DEFAULT_LIMITS.max_bytes) -> bytes:
        return await asyncio.to_thread(self.fetch_instance, study_uid, series_uid, sop_instance_uid,
                                       max_bytes=max_bytes)

    async def store_async(self, dataset: pydicom.Dataset) -> str:
        return await asyncio.to_thread(self.store, dataset)

    async def find_instances_async(self, study_uid: str, *, modality: str | None = None) -> list[FoundInstance]:
        return await asyncio.to_thread(self.find_instances, study_uid, modality=modality)

    def _retrying(self, call: _Call, send: Callable[[], T]) -> T:
        """``send()``, sent again after a connection error, a timeout or a 5xx / 429, waiting 1, 2, 4... x backoff_s.
        Retrying a STOW is safe: it is idempotent."""
        tries = itertools.count()

        def attempt() -> T:
            call.retries = next(tries)
            return send()

        return retry(attempt, _retryable, Backoff(first_s=self.endpoint.backoff_s, retries=self.endpoint.retries))

    def _note(self, response: requests.Response, **_) -> None:
        """A response hook: this thread's call's last status and bytes on the wire, for STOW and the log line."""
        self._seen.status = response.status_code
        self._seen.sent += int(response.request.headers.get("Content-Length") or 0)
        self._seen.received += int(response.headers.get("Content-Length") or 0)

    @contextmanager
    def _call(self, operation: str):
        """One log line per call; what the PACS or the transport did wrong becomes a Pacs* error without URLs."""
        call, name = _Call(), self.endpoint.name
        self._seen.status, self._seen.sent, self._seen.received = None, 0, 0
        started, outcome = time.perf_counter(), "unexpected error"
        try:
            yield call
            outcome = f"HTTP {self._seen.status}"
        except (PacsRefused, PacsInstanceNotFound, DicomTooLarge) as e:
            outcome = f"HTTP {self._seen.status}, {type(e).__name__}"
            raise
        except requests.HTTPError as e:
            status = cast(requests.Response, e.response).status_code  # raise_for_status always sets it
            outcome = f"HTTP {status}"
            raise self._error_for(status, operation, call.retries) from None
        except (ValueError, KeyError) as e:  # an answer that does not parse (requests' JSON error included)
            outcome = f"HTTP {self._seen.status}, unreadable ({type(e).__name__})"
            raise PacsRefused(f"PACS '{name}' answered the {operation} with what this server cannot read") from None
        except requests.exceptions.SSLError:
            outcome = "SSLError"
            raise PacsRefused(f"the certificate of PACS '{name}' was not accepted (is its CA the ca_bundle?)") from None
        except requests.RequestException as e:  # its message holds the URL: only its kind goes on
            outcome = type(e).__name__
            raise PacsUnavailable(f"PACS '{name}' could not be reached or did not answer in time ({outcome}, "
                                  f"after {call.retries} retries)") from None
        finally:
            log.info("pacs %s %s: %s, %d bytes, %.0f ms, %d retries", name, operation, outcome, call.nbytes,
                     (time.perf_counter() - started) * 1000, call.retries)

    def _error_for(self, status: int, operation: str, retries: int) -> Exception:
        name = self.endpoint.name
        if status in (401, 403):
            return PacsRefused(f"the server's credentials for PACS '{name}' were refused (HTTP {status})")
        if status == 404 and operation == "fetch":  # elsewhere a 404 is a wrong URL in the configuration
            return PacsInstanceNotFound(f"PACS '{name}' has no such instance")
        if status in RETRIED_STATUSES:
            return PacsUnavailable(f"PACS '{name}' answered HTTP {status} after {retries} retries")
        return PacsRefused(f"PACS '{name}' refused the {operation} (HTTP {status})")

    def _too_large(self, max_bytes: int) -> DicomTooLarge:
        return DicomTooLarge(f"the instance on PACS '{self.endpoint.name}' is over the {max_bytes} byte limit")


@dataclass
class _Call:
    """What one call's log line says besides its outcome."""

    nbytes: int = 0
    retries: int = 0


@dataclass(frozen=True)
class FoundInstance:
    """One instance a QIDO search found."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str | None

    @classmethod
    def from_json(cls, item: dict) -> FoundInstance:
        ds = pydicom.Dataset.from_json(item)
        return cls(str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
                   str(ds.get("SOPInstanceUID", "")), str(ds.get("SOPClassUID", "")), ds.get("Modality"))


def _uid(uid: str) -> str:
    """``uid`` if it is a DICOM UID; it goes into a URL path, so nothing else may."""
    if not (len(uid) <= 64 and UID.fullmatch(uid)):
        raise InvalidInstanceReference("a study, series or SOP instance UID must be digits and dots, at most 64")
    return uid


def _only_part(body: bytes, content_type: str) -> bytes:
    """The one part of a WADO-RS multipart/related answer (b"" if it has none); some servers send it bare."""
    media_type, _, parameters = content_type.partition(";")
    found = re.search(r'boundary="?([^";]+)"?', parameters, flags=re.IGNORECASE)
    if media_type.strip().lower() != "multipart/related" or not found:
        return body
    delimiter = b"--" + found.group(1).encode()
    start = body.find(delimiter)
    content = body.find(b"\r\n\r\n", start)
    end = body.find(b"\r\n" + delimiter, content)
    if start < 0 or content < 0 or end < 0:
        return b""  # "--boundary--" alone: no parts
    return body[content + 4:end]


def _json_dataset(response: requests.Response) -> pydicom.Dataset:
    """The DICOM JSON dataset of a STOW answer (Orthanc sends one with its 409, without a Content-Type)."""
    try:
        return pydicom.Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError, AttributeError):
        return pydicom.Dataset()


def _retryable(error: Exception) -> bool:
    if isinstance(error, requests.HTTPError):
        return error.response is not None and error.response.status_code in RETRIED_STATUSES
    # an unaccepted certificate stays unaccepted
    return (isinstance(error, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError)
            and not isinstance(error, requests.exceptions.SSLError))


class PacsRegistry:
    """PACS endpoint name -> ``PacsClient``, from an endpoints file (re-read when it or a secret changes)."""

    def __init__(self, clients: dict[str, PacsClient] | Reloading[dict[str, PacsClient]]):
        self.loaded = clients

    @classmethod
    def from_file(cls, path: str | Path) -> PacsRegistry:
        return cls(Reloading(Path(path), _load_clients, what="PACS endpoints file", log=log,
                             describe=lambda clients: ", ".join(sorted(clients))))

    @property
    def clients(self) -> dict[str, PacsClient]:
        return self.loaded.get() if isinstance(self.loaded, Reloading) else self.loaded

    @property
    def names(self) -> list[str]:
        return sorted(self.clients)

    def client(self, name: str) -> PacsClient:
        """The client for the PACS the server's configuration calls ``name``."""
        clients = self.clients
        if name not in clients:
            configured = ", ".join(sorted(clients)) or "none"
            raise UnknownPacs(f"no PACS named {name[:64]!r} is configured on this server (configured: {configured})")
        return clients[name]


def _load_clients(path: Path) -> tuple[dict[str, PacsClient], tuple[Path, ...]]:
    endpoints, secret_files = load_pacs_file(path)
    return {e.name: PacsClient(e) for e in endpoints}, secret_files
