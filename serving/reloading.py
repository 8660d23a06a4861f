"""Configuration read from a file and read again when it changes, written once: the tokens file
(``serving.front.tenants``) and the PACS endpoints file with the secrets it names (``serving.dicom.pacs``).

On Kubernetes both are mounted from a ConfigMap or Secret, so a rotated token or password takes effect
without a restart; a version that does not load is refused with an error in the log, and what was loaded
before still applies.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def _stamp(files: tuple[Path, ...]) -> tuple[int, ...]:
    return tuple(os.stat(f).st_mtime_ns for f in files)


class Reloading(Generic[T]):
    """What ``load(path)`` makes of a file, made again when the file, or another file the load read, changes.

    ``load`` returns the value and the other files it read (secrets). The files are looked at on ``get()``, at
    most every ``every_s`` seconds, by modification time; each version is loaded once, whether it loads or not.
    A load that fails (``OSError``, ``ValueError``: its message names the file and the entry, never a secret) is
    logged to ``log`` as "the changed <what> was refused", and the value before it stays.
    """

    def __init__(self, path: Path, load: Callable[[Path], tuple[T, tuple[Path, ...]]], *, what: str,
                 log: logging.Logger, describe: Callable[[T], str] = lambda value: "", every_s: float = 2.0):
        self.path, self.what, self.every_s = path, what, every_s
        self._load, self._log, self._describe = load, log, describe
        self._value, also = load(path)  # the first version must load: a server does not start without it
        self._files = (path, *also)
        self._stamp, self._checked = _stamp(self._files), time.monotonic()

    def get(self) -> T:
        """The value of the latest version of the files that loaded."""
        if time.monotonic() - self._checked >= self.every_s:
            self._checked = time.monotonic()
            self._reload_if_changed()
        return self._value

    def _reload_if_changed(self) -> None:
        try:
            stamp = _stamp(self._files)
            if stamp == self._stamp:
                return
            self._stamp = stamp  # read each version once, whether it loads or not
            self._value, also = self._load(self.path)
            self._files = (self.path, *also)
            self._stamp = _stamp(self._files)
            self._log.info("%s reloaded: %s", self.what, self._describe(self._value))
        except (OSError, ValueError) as e:
            self._log.error("the changed %s was refused, what was loaded before still applies: %s", self.what, e)
