"""When the proxy first saw each upstream record (issue 13): the publish time a cooldown trusts.

One file per channel and subdir (`<channel>/<subdir>`; its labels share it, so a file that
shows up under a fresh label is not backfilled), a msgpack map of file name to Unix
milliseconds, under `<cache>/policy/` so purges and eviction never touch it (a purge must not
reset the clock and release everything at once). Written whole to a temp file, fsynced and
renamed: a reader sees the old map or the new one. Callers hold the
`policy-times:<channel>/<subdir>` lock, so there is one writer at a time across workers. Plain
functions of paths, so the worker process can read and write them too.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from ..rules.names import hashed_name
from .entries import open_regular

# A file name and a time per record: conda-forge's biggest subdir (~600k files) is ~40 MB.
MAX_TIMES_SIZE = 256 << 20


def times_path(root: Path | str, subdir_key: str) -> str:
    return os.path.join(str(root), f"{hashed_name(subdir_key)}.first-seen.msgpack")


def load_times(path: str) -> dict[str, int] | None:
    """The map, or None if this subdir was never seen (the first sync backfills).

    Anything else at its path is damage the policy cannot build past (backfilling would
    shorten holds): a fifo (which a plain open waited on for ever, the request and the
    subdir's policy lock with it), a link, a directory, a file past MAX_TIMES_SIZE, bytes that
    are no map; the view is then a 503 and the log names the file."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size > MAX_TIMES_SIZE:
            raise ValueError(f"{path} is larger than a first-seen map can be")
        data = f.read(MAX_TIMES_SIZE + 1)
    if len(data) > MAX_TIMES_SIZE:  # grown since
        raise ValueError(f"{path} is larger than a first-seen map can be")
    found = msgpack.unpackb(data, strict_map_key=True)
    if not isinstance(found, dict):
        raise ValueError(f"{path} is not a first-seen map")
    return found


def save_times(path: str, times: dict[str, int]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.partial"
    try:
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(times, use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
