"""The local runtime: the real ``tritonserver`` binary shipped in the PyPI wheel ``nvidia-pytriton``.

The wheel (``pip install "hermes-aeriel[local]"``) carries Triton 2.51 with its python
backend only. This runtime runs that binary directly (not through PyTriton's API):

* it assembles a backend directory: ``python/`` holds ``libtriton_python.so`` (a real copy,
  because python-based backends sit beside it), ``triton_python_backend_utils.py`` and the
  stub built for the running interpreter; every portable backend shipped in
  ``hermes.aeriel.backends`` (``onnxruntime``, ``pytorch``) gets ``<name>/model.py``;
* the server's ``PATH`` starts with this interpreter's ``bin`` so that the stub's embedded
  Python finds this environment's packages, and ``LD_LIBRARY_PATH`` names the interpreter's
  ``LIBDIR`` and the wheel's ``nvidia_pytriton.libs``.

Preflight checks name the fix for each way this can fail silently or hang: a missing wheel,
a stub that cannot load ``libpythonX.Y``, numpy >= 2 (every output would come back empty).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from hermes.aeriel.exceptions import ServerPreflightError
from hermes.aeriel.server._runtime import Runtime, ServerSpec

__all__ = ["LocalRuntime", "TritonWheel", "check_numpy", "find_triton_wheel", "map_visible_devices"]

_INSTALL_HINT = 'pip install "hermes-aeriel[local]"  (installs nvidia-pytriton==0.7.0)'
SUPPORTED_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12")


class TritonWheel:
    """Paths inside an installed ``nvidia-pytriton`` wheel."""

    def __init__(self, site: Path):
        self.site = site
        self.root = site / "pytriton" / "tritonserver"
        self.binary = self.root / "bin" / "tritonserver"
        self.libs = site / "nvidia_pytriton.libs"
        self.python_backend = self.root / "backends" / "python"

    def stub(self, python_version: str) -> Path:
        """The python backend stub built for ``python_version`` (``"3.11"``)."""
        return self.root / "python_backend_stubs" / python_version / "triton_python_backend_stub"

    @property
    def version(self) -> str:
        try:
            return importlib.metadata.version("nvidia-pytriton")
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


def find_triton_wheel() -> TritonWheel:
    """Locate the installed ``nvidia-pytriton`` wheel without importing it.

    Raises:
        ServerPreflightError: the wheel or its ``tritonserver`` binary is missing.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerPreflightError(
            f"the local runtime needs the tritonserver binary from nvidia-pytriton, which is "
            f"not installed in {sys.prefix}; install it with: {_INSTALL_HINT}"
        )
    site = Path(next(iter(spec.submodule_search_locations))).resolve().parent
    wheel = TritonWheel(site)
    if not wheel.binary.is_file():
        raise ServerPreflightError(
            f"nvidia-pytriton is installed but {wheel.binary} is missing (a non-x86_64 or "
            f"incomplete install?); reinstall it with: {_INSTALL_HINT}"
        )
    return wheel


def check_numpy(version: str) -> None:
    """Raise if ``version`` of numpy breaks the bundled python backend (numpy >= 2)."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major >= 2:
        raise ServerPreflightError(
            f"numpy {version} is installed in {sys.prefix}; Triton 2.51's python backend "
            "returns every output empty with numpy>=2 (python_backend#384). "
            'Install numpy<2 in this environment: pip install "numpy<2"'
        )


class LocalRuntime(Runtime):
    """Run ``tritonserver`` from the ``nvidia-pytriton`` wheel of this Python environment.

    Args:
        python: interpreter whose environment the python backend uses (default: this one).
        portable_backends: install hermes' python-based ``onnxruntime`` and ``pytorch``
            backends beside the python backend, so standard ``model.onnx``/``model.pt``
            folders serve on CPU.
    """

    name = "local"

    def __init__(self, *, python: str | os.PathLike[str] | None = None, portable_backends: bool = True):
        self.python = Path(python) if python is not None else Path(sys.executable)
        self.portable_backends = portable_backends
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.wheel: TritonWheel | None = None

    # ------------------------------------------------------------------ environment
    @property
    def python_version(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    def server_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment: this venv first on PATH, LIBDIR and the wheel's libs on LD_LIBRARY_PATH."""
        wheel = self.wheel or find_triton_wheel()
        env = self.base_env(extra)
        env["PATH"] = os.pathsep.join(filter(None, [str(self.python.parent), env.get("PATH")]))
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [libdir, str(wheel.libs), env.get("LD_LIBRARY_PATH")])
        )
        return env

    # ------------------------------------------------------------------ preflight
    def preflight(self, spec: ServerSpec) -> None:
        self.wheel = wheel = find_triton_wheel()
        pyver = self.python_version
        if pyver not in SUPPORTED_PYTHONS:
            raise ServerPreflightError(
                f"the bundled Triton python backend has no stub for Python {pyver} that works "
                f"with numpy<2; use Python {', '.join(SUPPORTED_PYTHONS)} for the local runtime"
            )
        stub = wheel.stub(pyver)
        if not stub.is_file():
            raise ServerPreflightError(
                f"the python backend stub for Python {pyver} is missing ({stub}); "
                f"reinstall with: {_INSTALL_HINT}"
            )
        try:
            check_numpy(importlib.metadata.version("numpy"))
        except importlib.metadata.PackageNotFoundError:
            raise ServerPreflightError(
                f"numpy is not installed in {sys.prefix}; the python backend needs numpy<2: "
                'pip install "numpy<2"'
            ) from None
        # The stub embeds libpythonX.Y: if it cannot load it, the server hangs forever
        # loading the first python model. Run it bare: exit status 1 ("Expected 9
        # arguments") means it starts; 127 means a library is missing.
        proc = subprocess.run(
            [str(stub)],
            capture_output=True,
            text=True,
            env=self.server_env(),
            timeout=60,
            check=False,
        )
        if proc.returncode != 1:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise ServerPreflightError(
                f"the python backend stub for Python {pyver} cannot start (exit status "
                f"{proc.returncode}: {detail[0]}); it needs libpython{pyver}.so.1.0 — use an "
                "interpreter built with --enable-shared, or install your distribution's "
                f"libpython{pyver} package"
            )
        repo = spec.repository
        if "://" not in repo:
            path = Path(repo)
            if not path.exists():
                raise ServerPreflightError(f"model repository {repo} does not exist")
            if not path.is_dir():
                raise ServerPreflightError(f"model repository {repo} is not a directory")

    # ------------------------------------------------------------------ command
    def _backend_directory(self) -> Path:
        assert self.wheel is not None
        self._workdir = tempfile.TemporaryDirectory(prefix="hermes-triton-backends-")
        root = Path(self._workdir.name)
        python = root / "python"
        python.mkdir()
        # A real copy: with python-based backends beside it, Triton refuses a library that
        # "escapes" the backend directory through a symlink.
        shutil.copy2(self.wheel.python_backend / "libtriton_python.so", python / "libtriton_python.so")
        (python / "triton_python_backend_utils.py").symlink_to(
            self.wheel.python_backend / "triton_python_backend_utils.py"
        )
        (python / "triton_python_backend_stub").symlink_to(self.wheel.stub(self.python_version))
        if self.portable_backends:
            for name, source in portable_backend_sources().items():
                (root / name).mkdir()
                shutil.copyfile(source, root / name / "model.py")
        return root

    def command(self, spec: ServerSpec) -> tuple[list[str], dict[str, str]]:
        if self.wheel is None:
            self.wheel = find_triton_wheel()
        if "://" not in spec.repository:
            precompile_python_models(Path(spec.repository))
        backends = self._backend_directory()
        argv = [
            str(self.wheel.binary),
            *spec.triton_args(),
            f"--backend-directory={backends}",
        ]
        if not spec.gpus:
            argv += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        if "--disable-auto-complete-config" not in spec.server_args and not any(
            a.startswith("--strict-model-config") for a in spec.server_args
        ):
            argv.append("--disable-auto-complete-config")
        env = self.server_env(dict(spec.env))
        if spec.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = map_visible_devices(
                spec.gpus, os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        return argv, env

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def precompile_python_models(repository: Path) -> None:
    """Byte-compile every ``<model>/<version>/model.py`` before the server first imports it.

    The python backend writes ``__pycache__`` into a version folder the first time it loads
    it; Triton then sees that folder as changed and re-creates the version on the next load
    (e.g. a hot swap's ``version_policy`` change), dropping the state of live sequences.
    Compiling beforehand leaves the folder unchanged from the server's point of view.
    """
    for source in repository.glob("*/*/model.py"):
        with contextlib.suppress(OSError, py_compile.PyCompileError):
            py_compile.compile(str(source), doraise=True, quiet=1)


def portable_backend_sources() -> dict[str, Path]:
    """``{backend name: model.py}`` for every portable backend shipped with hermes-aeriel."""
    found: dict[str, Path] = {}
    try:
        root = importlib.resources.files("hermes.aeriel") / "backends"
    except ModuleNotFoundError:  # pragma: no cover - package data always present
        return found
    root_path = Path(str(root))
    if not root_path.is_dir():
        return found
    for entry in sorted(root_path.iterdir()):
        model = entry / "model.py"
        if entry.is_dir() and model.is_file():
            found[entry.name] = model
    return found


def map_visible_devices(gpus: tuple[int, ...] | list[int], host_visible: str | None) -> str:
    """Map GPU indices relative to the host's ``CUDA_VISIBLE_DEVICES`` to the value the server gets.

    ``gpus=(0, 1)`` with ``CUDA_VISIBLE_DEVICES=4,5,6`` gives ``"4,5"``: the indices count
    the devices this job may see, which is what a batch scheduler hands out.

    Raises:
        ValueError: an index is outside the visible devices.
    """
    if host_visible is None or host_visible.strip() == "":
        return ",".join(str(g) for g in gpus)
    visible = [v.strip() for v in host_visible.split(",") if v.strip()]
    out = []
    for g in gpus:
        if not 0 <= g < len(visible):
            raise ValueError(
                f"GPU index {g} is outside the devices this job may use "
                f"(CUDA_VISIBLE_DEVICES={host_visible!r} gives indices 0..{len(visible) - 1})"
            )
        out.append(visible[g])
    return ",".join(out)
