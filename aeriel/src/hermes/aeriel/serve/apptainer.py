"""The Apptainer/Singularity runtime: the real ``tritonserver`` inside a container image.

On HPC clusters NVIDIA's Triton images (converted to ``.sif``) carry every backend and
TensorRT. This runtime builds the command line and lets :class:`~hermes.aeriel.serve.Server`
run it like any other process:

```
apptainer exec --cleanenv [--nv] --bind REPO:/models:ro --bind LOGDIR \\
    [--env CUDA_VISIBLE_DEVICES=..] [--env K=V ...] IMAGE \\
    tritonserver --model-repository=/models --http-port=... [server args]
```

* ``apptainer`` is preferred and ``singularity`` is the fallback (or the other way round
  when ``executable="singularity"``);
* the image is an absolute path, a path relative to the working directory, a name inside
  an image directory (``image_dir=`` or ``$HERMES_IMAGE_DIR``, ``.sif`` optional), or a
  URI (``docker://``, ``oras://``, ``library://``) passed through unchanged;
* GPUs (``gpus=``) add ``--nv`` and pin ``CUDA_VISIBLE_DEVICES`` inside the container,
  mapped through this job's own ``CUDA_VISIBLE_DEVICES``;
* ``exec`` keeps the server in the foreground: its output is the server log, and SIGTERM,
  which apptainer forwards to the container's process, stops it cleanly.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from hermes.aeriel.exceptions import ServerPreflightError
from hermes.aeriel.serve._runtime import Runtime, ServerSpec
from hermes.aeriel.serve.local import map_visible_devices

__all__ = ["IMAGE_DIR_ENV", "ApptainerRuntime", "find_container_executable", "resolve_image"]

logger = logging.getLogger("hermes.aeriel.serve.apptainer")

IMAGE_DIR_ENV = "HERMES_IMAGE_DIR"
CONTAINER_REPOSITORY = "/models"
_EXECUTABLES = ("apptainer", "singularity")
_URI_SCHEMES = ("docker://", "oras://", "library://", "shub://", "docker-daemon:", "instance://")


def find_container_executable(preferred: str = "apptainer") -> str:
    """The path of ``apptainer`` or ``singularity`` on PATH, ``preferred`` first.

    Raises:
        ServerPreflightError: neither is on PATH.
    """
    if preferred not in _EXECUTABLES:
        raise ValueError(f"executable must be 'apptainer' or 'singularity', got {preferred!r}")
    order = [preferred, *(e for e in _EXECUTABLES if e != preferred)]
    for name in order:
        path = shutil.which(name)
        if path:
            if name != preferred:
                logger.info("%s not found on PATH; using %s", preferred, path)
            return path
    raise ServerPreflightError(
        "neither apptainer nor singularity is on PATH; load it (e.g. `module load apptainer`) "
        "or use runtime='local'"
    )


def resolve_image(image: str, image_dir: str | os.PathLike[str] | None = None) -> str:
    """Where ``image`` is: an absolute path, a relative path, a name in an image directory, or a URI.

    Args:
        image: the image as the caller named it.
        image_dir: directory of images; defaults to ``$HERMES_IMAGE_DIR``.

    Returns:
        An absolute path, or the URI unchanged.

    Raises:
        ServerPreflightError: no such image (names every place looked at).
    """
    if not image:
        raise ServerPreflightError("image must name a .sif file, an image in the image directory, or a URI")
    if image.startswith(_URI_SCHEMES):
        return image
    path = Path(image).expanduser()
    tried: list[Path] = []
    if path.is_absolute():
        tried.append(path)
    else:
        tried.append(Path.cwd() / path)
        directory = image_dir if image_dir is not None else os.environ.get(IMAGE_DIR_ENV)
        if directory:
            tried.append(Path(directory).expanduser() / path)
            if path.suffix != ".sif":
                tried.append(Path(directory).expanduser() / f"{image}.sif")
    for candidate in tried:
        if candidate.exists():
            return str(candidate.resolve())
    hint = (
        ""
        if image_dir is not None or os.environ.get(IMAGE_DIR_ENV)
        else f" (set {IMAGE_DIR_ENV} to an image directory)"
    )
    raise ServerPreflightError(
        f"container image {image!r} not found; looked at {', '.join(str(t) for t in tried)}{hint}"
    )


class ApptainerRuntime(Runtime):
    """Run ``tritonserver`` in an Apptainer (or Singularity) image with ``exec``.

    Args:
        image: ``.sif`` path, image name in ``image_dir``, or a URI (see :func:`resolve_image`).
        executable: ``"apptainer"`` (then ``singularity`` as fallback) or ``"singularity"``.
        image_dir: directory of images; defaults to ``$HERMES_IMAGE_DIR``.
        container_repository: where the repository is bound inside the container.
        binds: extra ``--bind`` specs (``src[:dst[:ro]]``).
        extra_args: extra arguments for ``apptainer exec`` (before the image).
        tritonserver: the server command inside the image.
    """

    name = "apptainer"

    def __init__(
        self,
        *,
        image: str,
        executable: str = "apptainer",
        image_dir: str | os.PathLike[str] | None = None,
        container_repository: str = CONTAINER_REPOSITORY,
        binds: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        tritonserver: str = "tritonserver",
    ):
        if executable not in _EXECUTABLES:
            raise ValueError(f"executable must be 'apptainer' or 'singularity', got {executable!r}")
        if not container_repository.startswith("/"):
            raise ValueError(f"container_repository must be an absolute path, got {container_repository!r}")
        self.image = image
        self.executable = executable
        self.name = executable
        self.image_dir = image_dir
        self.container_repository = container_repository
        self.binds = tuple(binds)
        self.extra_args = tuple(extra_args)
        self.tritonserver = tritonserver
        self._resolved: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"ApptainerRuntime(image={self.image!r}, executable={self.executable!r})"

    # ------------------------------------------------------------------ Runtime API
    def preflight(self, spec: ServerSpec) -> None:
        exe = find_container_executable(self.executable)
        image = resolve_image(self.image, self.image_dir)
        repo = spec.repository
        if "://" not in repo and not Path(repo).is_dir():
            raise ServerPreflightError(f"model repository {repo} does not exist or is not a directory")
        self._resolved = (exe, image)

    def command(self, spec: ServerSpec) -> tuple[list[str], dict[str, str]]:
        exe, image = self._resolved or (
            find_container_executable(self.executable),
            resolve_image(self.image, self.image_dir),
        )
        argv = [exe, "exec", "--cleanenv"]
        if spec.gpus:
            argv.append("--nv")
        repo = spec.repository
        if "://" in repo:
            container_repo = repo
        else:
            container_repo = self.container_repository
            argv += ["--bind", f"{Path(repo).resolve()}:{container_repo}:ro"]
        log_dir = Path(spec.log_file).resolve().parent
        argv += ["--bind", f"{log_dir}:{log_dir}"]
        for bind in self.binds:
            argv += ["--bind", bind]
        container_env = dict(spec.env)
        if spec.gpus is not None:
            container_env["CUDA_VISIBLE_DEVICES"] = map_visible_devices(
                spec.gpus, os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        for key, value in container_env.items():
            argv += ["--env", f"{key}={value}"]
        argv += [*self.extra_args, image, self.tritonserver, *spec.triton_args(repository=container_repo)]
        if not spec.gpus:
            argv += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        return argv, self.base_env()

    def stop_command(self, spec: ServerSpec) -> Sequence[str] | None:
        """None: ``exec`` forwards SIGTERM to tritonserver, which the Server sends."""
        return None
