"""The Apptainer/Singularity runtime: the real ``tritonserver`` inside a container image.

On HPC clusters NVIDIA's Triton images (converted to ``.sif``) carry every backend and
TensorRT. This runtime builds the command line and lets :class:`~hermes.aeriel.server.Server`
run it like any other process:

```
APPTAINERENV_K=V ... (allow-listed host variables: proxies, credentials, CUDA_VISIBLE_DEVICES)
apptainer exec --cleanenv [--nv] --bind REPO:/models:ro --bind LOGDIR [--bind CREDENTIAL_FILE:ro] \\
    [--env CUDA_VISIBLE_DEVICES=..] [--env K=V ...] IMAGE \\
    tritonserver --model-repository=/models --http-port=... [server args]
```

* ``apptainer`` is preferred and ``singularity`` is the fallback (or the other way round
  when ``executable="singularity"``);
* the image is an absolute path, a path relative to the working directory, a name inside
  an image directory (``image_dir=``, ``$HERMES_IMAGE_DIR``, the site's CVMFS image tree;
  ``.sif`` optional), or a URI: ``docker://``/``oras://`` ones are pulled once into a cached
  ``.sif`` by a step of their own (:func:`~hermes.aeriel.server.images.pull_image`), with
  its own timeout, before the server's readiness clock starts;
* GPUs: by default the server gets every GPU this job may use (``--nv`` where the host
  has NVIDIA GPUs, and the job's ``CUDA_VISIBLE_DEVICES`` passes through), as the
  predecessor always did; ``gpus=[...]`` narrows that (``CUDA_VISIBLE_DEVICES`` pinned,
  mapped through the job's own), ``gpus=()`` (``"none"``) runs on the CPU;
* ``--cleanenv`` keeps the host environment out of the container except an allow-list
  (:data:`DEFAULT_PASS_ENV`, extended by ``pass_env=`` or ``$HERMES_APPTAINER_PASS_ENV``):
  the values travel as ``APPTAINERENV_*`` variables, never on the command line, so
  credentials do not show in ``ps`` or in logs; credential files they name are bound
  read-only;
* ``exec`` keeps the server in the foreground: its output is the server log, and SIGTERM,
  which apptainer forwards to the container's process, stops it cleanly.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hermes.aeriel.exceptions import ServerPreflightError
from hermes.aeriel.server._runtime import Runtime, ServerSpec
from hermes.aeriel.server.images import IMAGE_DIR_ENV, PULL_SCHEMES, find_cached, image_dirs, pull_image
from hermes.aeriel.server.local import map_visible_devices

__all__ = [
    "DEFAULT_PASS_ENV",
    "IMAGE_DIR_ENV",
    "PASS_ENV_ENV",
    "ApptainerRuntime",
    "find_container_executable",
    "host_gpu_count",
    "resolve_image",
]

logger = logging.getLogger("hermes.aeriel.server.apptainer")

CONTAINER_REPOSITORY = "/models"
PASS_ENV_ENV = "HERMES_APPTAINER_PASS_ENV"
DEFAULT_PASS_ENV: tuple[str, ...] = (
    # the GPUs the batch system gave this job
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    # proxies and certificates, for gs://, s3:// and http(s) repositories
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    # cloud storage credentials read by Triton's repository agents
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "AWS_*",
    "AZURE_STORAGE_*",
    "TRITON_AZURE_MOUNT_DIRECTORY",
    "TRITON_GCS_MOUNT_DIRECTORY",
    "TRITON_AWS_MOUNT_DIRECTORY",
    # threads and locale
    "OMP_NUM_THREADS",
    "TZ",
)
"""Host variables that reach the server through ``--cleanenv`` (``*`` matches any suffix)."""

_CREDENTIAL_FILES = ("GOOGLE_APPLICATION_CREDENTIALS", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                     "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # fmt: skip
_EXECUTABLES = ("apptainer", "singularity")
_URI_SCHEMES = ("docker://", "oras://", "library://", "shub://", "docker-daemon:", "instance://")


def host_gpu_count() -> int:
    """How many NVIDIA GPUs this host (job) has: ``nvidia-smi -L``, else ``/dev/nvidia<N>`` devices."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None and out.returncode == 0:
            return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*"))


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

    A ``docker://``/``oras://`` URI with a local copy in an image directory (a pulled
    ``.sif`` or an unpacked CVMFS image) resolves to that copy; other URIs come back unchanged.

    Args:
        image: the image as the caller named it.
        image_dir: directory of images, looked at before ``$HERMES_IMAGE_DIR`` and CVMFS.

    Returns:
        An absolute path, or the URI.

    Raises:
        ServerPreflightError: no such image (names every place looked at).
    """
    if not image:
        raise ServerPreflightError("image must name a .sif file, an image in the image directory, or a URI")
    if image.startswith(_URI_SCHEMES):
        cached = find_cached(image, image_dir) if image.startswith(PULL_SCHEMES) else None
        return str(cached) if cached is not None else image
    path = Path(image).expanduser()
    tried: list[Path] = []
    if path.is_absolute():
        tried.append(path)
    else:
        tried.append(Path.cwd() / path)
        for directory in image_dirs(image_dir):
            tried.append(directory / path)
            if path.suffix != ".sif":
                tried.append(directory / f"{image}.sif")
    for candidate in tried:
        if candidate.exists():
            return str(candidate.resolve())
    hint = "" if image_dir is not None or os.environ.get(IMAGE_DIR_ENV) else (
        f" (set {IMAGE_DIR_ENV} to an image directory)"
    )  # fmt: skip
    raise ServerPreflightError(
        f"container image {image!r} not found; looked at {', '.join(str(t) for t in tried)}{hint}"
    )


def passed_env(patterns: Sequence[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The host variables that match ``patterns`` (names, ``*`` globs), as they reach the container."""
    environ = dict(os.environ) if environ is None else environ
    return {
        key: value
        for key, value in environ.items()
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)
    }


class ApptainerRuntime(Runtime):
    """Run ``tritonserver`` in an Apptainer (or Singularity) image with ``exec``.

    Args:
        image: ``.sif`` path, image name in an image directory, or a URI (see :func:`resolve_image`).
        executable: ``"apptainer"`` (then ``singularity`` as fallback) or ``"singularity"``.
        image_dir: directory of images, looked at first and where pulled images go.
        container_repository: where the repository is bound inside the container.
        binds: extra ``--bind`` specs (``src[:dst[:ro]]``).
        extra_args: extra arguments for ``apptainer exec`` (before the image).
        tritonserver: the server command inside the image.
        pass_env: host variables (``*`` globs allowed) passed through ``--cleanenv``; default
            :data:`DEFAULT_PASS_ENV` plus ``$HERMES_APPTAINER_PASS_ENV`` (comma-separated).
        pull_timeout_s: how long pulling a ``docker://``/``oras://`` image may take.
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
        pass_env: Sequence[str] | None = None,
        pull_timeout_s: float = 3600.0,
    ):
        if executable not in _EXECUTABLES:
            raise ValueError(f"executable must be 'apptainer' or 'singularity', got {executable!r}")
        if not container_repository.startswith("/"):
            raise ValueError(f"container_repository must be an absolute path, got {container_repository!r}")
        if isinstance(pass_env, str):
            raise ValueError(f"pass_env must be a list of variable names, got the string {pass_env!r}")
        if pull_timeout_s <= 0:
            raise ValueError(f"pull_timeout_s must be > 0, got {pull_timeout_s}")
        self.image = image
        self.executable = executable
        self.name = executable
        self.image_dir = image_dir
        self.container_repository = container_repository
        self.binds = tuple(binds)
        self.extra_args = tuple(extra_args)
        self.tritonserver = tritonserver
        extra = [v.strip() for v in os.environ.get(PASS_ENV_ENV, "").split(",") if v.strip()]
        self.pass_env = (*(DEFAULT_PASS_ENV if pass_env is None else tuple(pass_env)), *extra)
        self.pull_timeout_s = pull_timeout_s
        self._resolved: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"ApptainerRuntime(image={self.image!r}, executable={self.executable!r})"

    # ------------------------------------------------------------------ Runtime API
    def preflight(self, spec: ServerSpec) -> None:
        exe = find_container_executable(self.executable)
        repo = spec.repository
        if "://" not in repo and not Path(repo).is_dir():
            raise ServerPreflightError(f"model repository {repo} does not exist or is not a directory")
        image = resolve_image(self.image, self.image_dir)
        if image.startswith(PULL_SCHEMES):  # not cached yet: the pull step, before the server's clock
            image = str(pull_image(image, image_dir=self.image_dir, executable=self.executable,
                                   timeout_s=self.pull_timeout_s))  # fmt: skip
        self._resolved = (exe, image)

    def uses_gpus(self, spec: ServerSpec) -> bool:
        """Whether the server gets GPUs: those asked for, or by default every one the host has."""
        if spec.gpus is None:
            return host_gpu_count() > 0
        return len(spec.gpus) > 0

    def command(self, spec: ServerSpec) -> tuple[list[str], dict[str, str]]:
        exe, image = self._resolved or (
            find_container_executable(self.executable),
            resolve_image(self.image, self.image_dir),
        )
        gpus = self.uses_gpus(spec)
        argv = [exe, "exec", "--cleanenv"]
        if gpus:
            argv.append("--nv")
        repo = spec.repository
        if "://" in repo:
            container_repo = repo
        else:
            container_repo = self.container_repository
            argv += ["--bind", f"{Path(repo).resolve()}:{container_repo}:ro"]
        log_dir = Path(spec.log_file).resolve().parent
        argv += ["--bind", f"{log_dir}:{log_dir}"]
        host_env = passed_env(self.pass_env)
        if spec.gpus is not None:  # pinned (or hidden) below, never inherited
            host_env.pop("CUDA_VISIBLE_DEVICES", None)
        for key in _CREDENTIAL_FILES:
            if key in host_env and Path(host_env[key]).is_file():
                argv += ["--bind", f"{Path(host_env[key]).resolve()}:{host_env[key]}:ro"]
        for bind in self.binds:
            argv += ["--bind", bind]
        container_env = dict(spec.env)
        if spec.gpus:
            container_env["CUDA_VISIBLE_DEVICES"] = map_visible_devices(
                spec.gpus, os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        for key, value in container_env.items():
            argv += ["--env", f"{key}={value}"]
        argv += [*self.extra_args, image, self.tritonserver, *spec.triton_args(repository=container_repo)]
        if not gpus:
            argv += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        env = self.base_env()
        prefixes = ["APPTAINERENV_"] + (["SINGULARITYENV_"] if Path(exe).name == "singularity" else [])
        for key, value in host_env.items():  # a variable the user set for the container wins
            for prefix in prefixes:
                env.setdefault(f"{prefix}{key}", value)
        return argv, env

    def stop_command(self, spec: ServerSpec) -> Sequence[str] | None:
        """None: ``exec`` forwards SIGTERM to tritonserver, which the Server sends."""
        return None
