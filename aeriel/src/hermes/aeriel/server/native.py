"""The native runtime: the ``tritonserver`` already on PATH, as inside NVIDIA's Triton images.

Batch jobs that the scheduler itself starts in a container (HTCondor's ``MY.SingularityImage``,
a Kubernetes pod) have the real server at hand: no nested container is wanted, and the
bundled python-backend-only binary of the local runtime would be the wrong one.
"""

from __future__ import annotations

import os
import shutil

from hermes.aeriel.exceptions import ServerPreflightError
from hermes.aeriel.server._runtime import Runtime, ServerSpec
from hermes.aeriel.server.local import map_visible_devices

__all__ = ["NativeRuntime"]


class NativeRuntime(Runtime):
    """Run ``tritonserver`` (or ``executable``) from PATH with the spec's arguments.

    Args:
        executable: the server command; looked up on PATH unless it is a path.
    """

    name = "native"

    def __init__(self, executable: str = "tritonserver"):
        self.executable = executable
        self._path: str | None = None

    def __repr__(self) -> str:
        return f"NativeRuntime(executable={self.executable!r})"

    def preflight(self, spec: ServerSpec) -> None:
        path = shutil.which(self.executable)
        if path is None:
            raise ServerPreflightError(
                f"{self.executable!r} is not on PATH; runtime='native' runs inside a Triton image "
                "(e.g. an HTCondor job with MY.SingularityImage); elsewhere use 'local' or 'apptainer'"
            )
        self._path = path

    def command(self, spec: ServerSpec) -> tuple[list[str], dict[str, str]]:
        argv = [self._path or self.executable, *spec.triton_args()]
        env = self.base_env(spec.env)
        if spec.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = map_visible_devices(
                spec.gpus, os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        if spec.gpus == ():
            argv += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        return argv, env
