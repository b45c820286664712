"""Pure rule: which upstream records the uploads of a channel hide (dependency confusion). No I/O.

A package name that exists among the uploads hides every upstream record of that name, unless
the channel lists the name in `allow_upstream`; an uploaded file replaces the upstream file of
the same file name either way.

Names compare normalised: lowercased, because clients choose by a record's `name` field and
fold case (rattler's PackageName compares its lowercased form; conda matches names
case-insensitively in practice), so `Ours` or `OURS` would be installed in place of `ours`.
An upstream record is hidden when either of its names is shadowed: the `name` field it carries
(what clients read) or the name its file name starts with (what its URL says). `_`, `-` and `.`
are not folded into each other: conda and rattler treat `my_pkg` and `my-pkg` as two packages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .routing import PACKAGE_RE


def normalised(name: object) -> str | None:
    """A package name as clients compare it; None for a value that is not a name."""
    return name.lower() if isinstance(name, str) else None


def package_name(filename: str) -> str | None:
    """The normalised name a package file name starts with (`<name>-<version>-<build>.<ext>`)."""
    match = PACKAGE_RE.match(filename)
    return match["name"].lower() if match else None


def shadowed_names(
    local: Mapping[str, Mapping[str, Any]], allow_upstream: Iterable[str]
) -> set[str]:
    """The normalised names whose upstream records the uploads `local` hide."""
    names = {n for r in local.values() if (n := normalised(r.get("name"))) is not None}
    return names - {n.lower() for n in allow_upstream}


def hides(filename: str, name: object, shadow: set[str], local: Mapping[str, Any]) -> bool:
    """Whether the upstream record `filename` (whose `name` field is `name`) is hidden: replaced
    by the upload of the same file name, or either of its names shadowed."""
    return filename in local or package_name(filename) in shadow or normalised(name) in shadow


def dropped(
    names: Iterable[tuple[str, object]], shadow: set[str], local: Mapping[str, Any]
) -> list[str]:
    """The upstream file names `hides` hides, of a package map given as (file name, `name`
    field) pairs. The same rule, in fewer Python steps per member (hundreds of thousands of
    them): the file name is parsed only when it starts with a shadowed name."""
    prefixes = tuple(f"{n}-" for n in shadow)
    return [
        fn
        for fn, name in names
        if fn in local
        or (isinstance(name, str) and name.lower() in shadow)
        or (fn.lower().startswith(prefixes) and package_name(fn) in shadow)
    ]


def same_file(names: Iterable[str], filename: str) -> str | None:
    """The one of `names` that is `filename` to a client (case folded: `MyTool-1.0-0.conda` and
    `mytool-1.0-0.conda` are one package, and one file on a case-insensitive disk), if any."""
    folded = filename.lower()
    return next((name for name in names if name.lower() == folded), None)
