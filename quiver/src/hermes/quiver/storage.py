"""Repository storage over fsspec: local paths, ``memory://``, ``gs://`` and ``s3://``.

:class:`Storage` is the only place hermes.quiver touches files. It never creates a bucket:
for object stores the root's bucket must exist, and a missing one raises
:class:`~hermes.quiver.RepositoryError`.
"""

from __future__ import annotations

import inspect
import logging
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec

from hermes.quiver._deps import require
from hermes.quiver.exceptions import RepositoryError

__all__ = ["Storage", "accepted_storage_options", "check_storage_options"]

logger = logging.getLogger("hermes.quiver.storage")

_EXTRA_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "s3a": "s3fs"}
_BUCKET_PROTOCOLS = frozenset({"gs", "gcs", "s3", "s3a"})
#: Schemes a repository may use (Triton reads local folders, gs:// and s3://; memory:// is for tests).
_PROTOCOLS = frozenset({"file", "memory"}) | _BUCKET_PROTOCOLS


# Options fsspec's AbstractFileSystem and its instance cache take for every filesystem.
_GENERIC_OPTIONS = frozenset(
    {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths", "asynchronous", "loop"}
)


# Filesystems whose __init__ drops keyword arguments it does not declare (others, such as
# HTTP, forward them to their client, so only these are checked).
_CHECKED_PROTOCOLS = frozenset({"file", "memory", "gs", "gcs", "s3", "s3a"})


def accepted_storage_options(protocol: str) -> frozenset[str] | None:
    """Keyword arguments the fsspec filesystem of ``protocol`` declares; None if it cannot be told.

    Read from the ``__init__`` signatures along the class's MRO (fsspec filesystems take
    ``**kwargs`` and keep unknown ones silently, so a typo would otherwise go unnoticed).
    """
    try:
        cls = fsspec.get_filesystem_class("file" if protocol == "file" else protocol)
    except (ImportError, ValueError):
        return None
    names = set(_GENERIC_OPTIONS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names.update(
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        )
    return frozenset(names)


def check_storage_options(protocol: str, options: dict[str, Any]) -> None:
    """Refuse keyword arguments the filesystem of ``protocol`` does not declare.

    Raises:
        RepositoryError: names each unknown option and lists the accepted ones.
    """
    if not options or protocol not in _CHECKED_PROTOCOLS:
        return
    accepted = accepted_storage_options(protocol)
    if accepted is None:
        return
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise RepositoryError(
            f"unknown storage option(s) {unknown} for a {protocol}:// repository; the {protocol} "
            f"filesystem accepts {sorted(accepted)} (hermes never passes unknown options on silently)"
        )


class Storage:
    """Files under one root, on any fsspec filesystem.

    Args:
        root: a local path or URL (``memory://repo``, ``gs://bucket/prefix``, ``s3://bucket``).
        **storage_options: passed to the fsspec filesystem (credentials, endpoint, ...).

    Raises:
        MissingDependencyError: ``gs://`` without gcsfs or ``s3://`` without s3fs.
        RepositoryError: the bucket of an object-store root does not exist; an option the
            filesystem does not declare (fsspec would keep it silently).
    """

    def __init__(self, root: str | Path, **storage_options: Any) -> None:
        text = str(root)
        protocol = text.split("://", 1)[0] if "://" in text else "file"
        if protocol not in _PROTOCOLS:
            raise RepositoryError(
                f"{text}: unsupported scheme {protocol + '://'!r}; a model repository is a local path, "
                "gs://bucket/prefix (hermes-quiver[gcs]), s3://bucket/prefix (hermes-quiver[s3]) or memory://name"
            )
        if protocol in _EXTRA_PACKAGES:
            require(_EXTRA_PACKAGES[protocol], f"a {protocol}:// repository")
        self.protocol = protocol
        check_storage_options(protocol, storage_options)
        if protocol == "file":
            path = str(Path(text.removeprefix("file://")).expanduser().resolve())
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file", **storage_options)
            self.root = path
        else:
            self.fs, path = fsspec.core.url_to_fs(text, **storage_options)
            self.root = path.rstrip("/")
        self.url = text if protocol != "file" else self.root
        if protocol in _BUCKET_PROTOCOLS:
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise RepositoryError(
                    f"{self.url}: the bucket {bucket!r} does not exist; hermes never creates buckets, create it first"
                )
        elif not self.fs.exists(self.root):
            self.fs.makedirs(self.root, exist_ok=True)
        elif not self.fs.isdir(self.root):
            raise RepositoryError(f"{self.url}: exists and is not a directory")

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def path(self, *parts: str) -> str:
        """The full path of ``parts`` under the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def display(self, *parts: str) -> str:
        """A user-facing name of ``parts`` (a URL for remote storage)."""
        if self.is_local:
            return self.path(*parts)
        return f"{self.protocol}://{self.path(*parts)}"

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def isdir(self, *parts: str) -> bool:
        return bool(self.fs.isdir(self.path(*parts)))

    def listdir(self, *parts: str) -> list[str]:
        """Names of the sub-folders of ``parts`` (sorted)."""
        base = self.path(*parts)
        if not self.fs.exists(base):
            return []
        self.fs.invalidate_cache(base)
        names = []
        for entry in self.fs.ls(base, detail=True):
            if entry["type"] == "directory":
                names.append(posixpath.basename(entry["name"].rstrip("/")))
        return sorted(names)

    def listfiles(self, *parts: str) -> list[str]:
        """Names of the files directly in ``parts`` (sorted)."""
        base = self.path(*parts)
        if not self.fs.exists(base):
            return []
        return sorted(
            posixpath.basename(e["name"]) for e in self.fs.ls(base, detail=True) if e["type"] != "directory"
        )

    def read_text(self, *parts: str) -> str:
        with self.fs.open(self.path(*parts), "r", encoding="utf-8") as fh:
            return str(fh.read())

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open(self.path(*parts), "rb") as fh:
            return bytes(fh.read())

    def makedirs(self, *parts: str) -> None:
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file; on local disk through a temporary name and a rename (atomic)."""
        target = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        if self.is_local:
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            Path(tmp).replace(target)
        else:
            with self.fs.open(target, "wb") as fh:
                fh.write(data)

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode("utf-8"), *parts)

    def put_dir(self, local_dir: str | Path, *parts: str) -> None:
        """Copy a local directory's content to ``parts`` (created)."""
        local = Path(local_dir)
        for file in sorted(local.rglob("*")):
            if file.is_file():
                rel = file.relative_to(local).as_posix()
                self.write_bytes(file.read_bytes(), *parts, *rel.split("/"))
        self.makedirs(*parts)

    def move(self, source: tuple[str, ...], target: tuple[str, ...]) -> None:
        """Move ``source`` to ``target``; a local rename is atomic.

        Raises:
            RepositoryError: ``target`` exists already.
        """
        src, dst = self.path(*source), self.path(*target)
        if self.fs.exists(dst):
            raise RepositoryError(f"{self.display(*target)}: exists already")
        if self.is_local:
            Path(src).rename(dst)
        else:
            self.fs.mv(src, dst, recursive=True)
        self.fs.invalidate_cache(posixpath.dirname(dst))

    def remove(self, *parts: str) -> None:
        """Remove a file or a folder and everything in it (nothing if absent)."""
        target = self.path(*parts)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)
        self.fs.invalidate_cache(posixpath.dirname(target))
