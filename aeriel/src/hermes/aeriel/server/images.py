"""Container images for the Apptainer runtime: where they are looked up, and the pull step.

A ``docker://`` or ``oras://`` image must be pulled and converted to a ``.sif`` before a
server can start from it. That takes minutes for NVIDIA's Triton images (gigabytes of
layers), so it is a step of its own, with its own timeout and progress in the log, whose
result is cached: the second start on a node (and every later job that shares the image
directory) starts at once.

```
pull_image("docker://nvcr.io/nvidia/tritonserver:24.10-py3")
  1. a copy under an image directory?  ->  that path (a .sif, or a CVMFS sandbox directory)
  2. apptainer pull DIR/.nvcr.io_nvidia_tritonserver_24.10-py3.sif.partial-XXXX URI
       (logged every few seconds: elapsed time, bytes written; killed after timeout_s)
  3. rename to DIR/nvcr.io_nvidia_tritonserver_24.10-py3.sif (atomic; a half-pulled image is never seen)
```

Image directories, in order: ``image_dir=``, ``$HERMES_IMAGE_DIR`` (several separated by
``:``), then the site's CVMFS image tree, ``$HERMES_CVMFS_IMAGE_DIR`` (default
``/cvmfs/singularity.opensciencegrid.org``, where IGWN and OSG publish unpacked images as
``<org>/<name>:<tag>`` directories). Pulled images go to the first writable directory of
``image_dir=``/``$HERMES_IMAGE_DIR``, else ``$XDG_CACHE_HOME/hermes/images``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from hermes.aeriel.exceptions import ImagePullError

__all__ = [
    "CVMFS_IMAGE_DIR",
    "CVMFS_IMAGE_DIR_ENV",
    "IMAGE_DIR_ENV",
    "PULL_SCHEMES",
    "cache_name",
    "image_dirs",
    "pull_image",
    "pull_target_dir",
]

logger = logging.getLogger("hermes.aeriel.server.images")

IMAGE_DIR_ENV = "HERMES_IMAGE_DIR"
CVMFS_IMAGE_DIR_ENV = "HERMES_CVMFS_IMAGE_DIR"
CVMFS_IMAGE_DIR = "/cvmfs/singularity.opensciencegrid.org"
PULL_SCHEMES = ("docker://", "oras://")
"""URIs that :func:`pull_image` converts to a cached ``.sif``."""


def image_dirs(image_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The image directories to look in, in order (see the module docstring)."""
    dirs: list[Path] = []
    if image_dir is not None:
        dirs.append(Path(image_dir).expanduser())
    dirs += [Path(p).expanduser() for p in os.environ.get(IMAGE_DIR_ENV, "").split(os.pathsep) if p]
    cvmfs = os.environ.get(CVMFS_IMAGE_DIR_ENV, CVMFS_IMAGE_DIR)
    if cvmfs:
        dirs.append(Path(cvmfs))
    return list(dict.fromkeys(dirs))


def pull_target_dir(image_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a pulled image is written: the first writable image directory, else the user cache."""
    candidates = [Path(image_dir).expanduser()] if image_dir is not None else []
    candidates += [Path(p).expanduser() for p in os.environ.get(IMAGE_DIR_ENV, "").split(os.pathsep) if p]
    for directory in candidates:
        if directory.is_dir() and os.access(directory, os.W_OK):
            return directory
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hermes" / "images"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def cache_name(uri: str) -> str:
    """The ``.sif`` file name a pulled ``uri`` is cached under (registry, path and tag kept)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise ValueError(
            f"expected a URI such as docker://nvcr.io/nvidia/tritonserver:24.10-py3, got {uri!r}"
        )
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", rest.strip("/"))
    return f"{name}.sif" if scheme == "docker" else f"{scheme}_{name}.sif"


def find_cached(uri: str, image_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """A local copy of ``uri``: a pulled ``.sif`` or an unpacked CVMFS image, if any."""
    name = cache_name(uri)
    _, _, rest = uri.partition("://")
    for directory in [*image_dirs(image_dir), pull_target_dir(image_dir)]:
        for candidate in (directory / name, directory / rest.strip("/")):
            if candidate.exists() and not candidate.name.startswith("."):
                return candidate
    return None


def _watch_progress(process: subprocess.Popen[bytes], partial: Path, uri: str, every_s: float) -> None:
    started = time.monotonic()
    while process.poll() is None:
        try:
            process.wait(every_s)
        except subprocess.TimeoutExpired:
            size = partial.stat().st_size if partial.exists() else 0
            logger.info(
                "pulling %s: %.0f s, %.1f MiB written so far", uri, time.monotonic() - started, size / 2**20
            )


def pull_image(
    uri: str,
    *,
    image_dir: str | os.PathLike[str] | None = None,
    executable: str | None = None,
    timeout_s: float = 3600.0,
    force: bool = False,
    progress_every_s: float = 10.0,
) -> Path:
    """Pull and convert ``uri`` to a cached ``.sif`` (or find a copy already there).

    Args:
        uri: ``docker://...`` or ``oras://...``.
        image_dir: directory to look in first and to write to; see the module docstring.
        executable: ``apptainer`` or ``singularity`` (found on PATH when omitted).
        timeout_s: how long the pull may take; it is killed and nothing is kept after that.
        force: pull again even when a copy exists.
        progress_every_s: seconds between progress lines in the log.

    Returns:
        The path of the image.

    Raises:
        ImagePullError: the pull failed or timed out (quotes apptainer's output).
        ServerPreflightError: neither apptainer nor singularity is on PATH.
    """
    from hermes.aeriel.server.apptainer import find_container_executable

    if not uri.startswith(PULL_SCHEMES):
        raise ValueError(f"pull_image takes a {' or '.join(PULL_SCHEMES)} URI, got {uri!r}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if not force:
        cached = find_cached(uri, image_dir)
        if cached is not None:
            logger.info("image %s: using %s", uri, cached)
            return cached
    exe = find_container_executable(executable or "apptainer")
    target = pull_target_dir(image_dir) / cache_name(uri)
    partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    argv = [exe, "pull", str(partial), uri]
    logger.info("pulling %s into %s (timeout %.0f s)", uri, target, timeout_s)
    log = partial.with_suffix(".log")
    started = time.monotonic()
    try:
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # fmt: skip
            watcher = threading.Thread(
                target=_watch_progress, args=(process, partial, uri, progress_every_s), daemon=True
            )
            watcher.start()
            try:
                code = process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise ImagePullError(
                    f"pulling {uri} did not finish in {timeout_s:.0f} s; nothing was kept. Pull it "
                    f"ahead of time with `hermes image pull {uri} --timeout SECONDS`:\n{_tail(log)}",
                    uri=uri,
                ) from None
            finally:
                watcher.join(1)
        if code != 0 or not partial.exists():
            raise ImagePullError(f"`{' '.join(argv)}` failed (exit status {code}):\n{_tail(log)}", uri=uri)
        partial.replace(target)
        logger.info("pulled %s in %.1f s: %s", uri, time.monotonic() - started, target)
        return target
    finally:
        partial.unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
