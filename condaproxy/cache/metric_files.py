"""prometheus-client's multiprocess files, made so that a full disk never kills a worker.

prometheus-client keeps each worker's values in a file it maps and writes through the mapping.
It makes the file sparse (truncate) and grows it the same way, so a value written to a page the
filesystem has no block for, once the disk under the metrics directory is full, kills the
process with SIGBUS: there is no error to catch. That directory is in shared memory when
/dev/shm is writable, else under the cache (cli.prepare_metrics_dir), whose disk fills up by
design; and /dev/shm itself may be small (a container's 64 MB). Here the blocks are reserved
(posix_fallocate) before prometheus-client writes to them: a disk without room is an error
there, and the values of that worker then go on in private memory (/metrics keeps what its
file held), with one warning in the log.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from typing import Any

import structlog
from prometheus_client import values as prom_values
from prometheus_client.mmap_dict import MmapedDict

log = structlog.get_logger("condaproxy.cache.metric_files")

INITIAL = 64 << 10  # prometheus-client's own first size for a file


def _entry_size(key: str) -> int:
    """The bytes prometheus-client's _init_value appends for `key`."""
    encoded = len(key.encode("utf-8"))
    return 4 + encoded + (8 - (encoded + 4) % 8) + 16


class ReservedMmapedDict(MmapedDict):  # type: ignore[misc]
    """A MmapedDict whose every page has its block before it is written."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if read_mode:
            super().__init__(filename, read_mode)
            return
        try:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                if os.fstat(fd).st_size == 0:
                    try:
                        os.posix_fallocate(fd, 0, INITIAL)
                    except OSError:
                        os.ftruncate(fd, 0)  # nothing half-made for /metrics to read
                        os.unlink(filename)
                        raise
            finally:
                os.close(fd)
        except OSError as exc:
            self._start_private(filename, exc)
            return
        super().__init__(filename)

    def _start_private(self, filename: str, exc: OSError) -> None:
        self._f: Any = None
        self._fname = filename
        self._capacity = INITIAL
        self._m = mmap.mmap(-1, INITIAL)
        self._positions: dict[str, int] = {}
        self._used = 8
        struct.pack_into("i", self._m, 0, self._used)
        _warn(filename, exc)

    def _init_value(self, key: str) -> None:
        needed = self._used + _entry_size(key)
        if needed > self._capacity:
            capacity = self._capacity
            while needed > capacity:
                capacity *= 2
            if self._f is not None:
                try:
                    os.posix_fallocate(self._f.fileno(), 0, capacity)
                except OSError as exc:
                    self._go_private(exc)
            if self._f is None:
                grown = mmap.mmap(-1, capacity)
                grown[: self._used] = self._m[: self._used]
                self._m, self._capacity = grown, capacity
        super()._init_value(key)

    def _go_private(self, exc: OSError) -> None:
        """From here on, this worker's values live in its own memory."""
        private = mmap.mmap(-1, self._capacity)
        private[: self._used] = self._m[: self._used]
        self._m.close()
        with contextlib.suppress(OSError):
            self._f.close()
        self._m, self._f = private, None
        _warn(self._fname, exc)


def _warn(filename: str, exc: OSError) -> None:
    log.warning(
        "metrics file has no room: this worker's new values stay in its memory",
        file=os.path.basename(filename),
        error=exc.strerror or str(exc),
    )


def install() -> None:
    """Before any value is made (prometheus-client looks the class up when it opens a file)."""
    prom_values.MmapedDict = ReservedMmapedDict  # type: ignore[misc]
