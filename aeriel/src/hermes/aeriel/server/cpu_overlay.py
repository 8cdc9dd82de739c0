"""Serve a repository written for GPUs on a CPU machine, without touching the user's files.

A repository exported for GPU nodes (the predecessor writes ``instance_group { kind: KIND_GPU }``
for its snapshotter and aggregator) fails to load where there is no GPU: Triton says
"instance group ... has kind KIND_GPU but no GPUs are available". ``serve(...,
instance_kind="cpu")`` (``hermes serve --cpu``) serves such a repository from a
:class:`CpuOverlay` instead::

    <tmp>/hermes-cpu-overlay-XXXX/          the directory Triton is given
        snapshotter/config.pbtxt            rewritten: KIND_GPU groups -> KIND_CPU (same count)
        snapshotter/1 -> <repo>/snapshotter/1   everything else: symlinks into the repository
        stream -> <repo>/stream             models with nothing to change: one symlink

The overlay is removed when the server stops. It reflects the configs at start: a model
added to the repository later is linked in when :meth:`CpuOverlay.refresh` runs (the
server does so before an explicit ``load_model``).

Only local directories can be overlaid: Triton reads a ``gs://``/``s3://`` repository
itself, so a remote repository is refused with a message saying to copy it locally first.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from hermes.aeriel._lifecycle import Closeable
from hermes.aeriel.exceptions import ServerPreflightError

__all__ = ["GPU_UNAVAILABLE", "CpuOverlay", "cpu_hint"]

logger = logging.getLogger("hermes.aeriel.server")

GPU_UNAVAILABLE = "KIND_GPU but no GPUs are available"
"""The part of Triton's load error for a GPU instance group on a machine without GPUs."""

_HINT = (
    "; this repository asks for GPU instances and this machine has none: serve it on the CPU with "
    'serve(..., instance_kind="cpu") or `hermes serve --cpu` (a temporary overlay; your files are not changed)'
)


def cpu_hint(reason: str) -> str:
    """``reason`` plus how to serve on the CPU when it is Triton's KIND_GPU load error, else unchanged."""
    return reason + _HINT if GPU_UNAVAILABLE in reason and "instance_kind" not in reason else reason


class CpuOverlay(Closeable):
    """A temporary view of a local repository whose configs put ``KIND_GPU`` groups on the CPU.

    Args:
        repository: the local model repository (never modified).

    Attributes:
        path: the overlay directory to give Triton.
        changes: one line per instance group moved to the CPU.

    Raises:
        ServerPreflightError: the repository is remote or is not a directory.
    """

    def __init__(self, repository: str | os.PathLike[str]) -> None:
        text = os.fspath(repository)
        if "://" in text:
            raise ServerPreflightError(
                f"instance_kind='cpu' needs a local repository, got {text}: Triton reads a remote "
                "repository itself, so hermes cannot rewrite its configs without changing them. Copy it "
                f"to a local directory first (e.g. `gcloud storage cp -r {text} ./repo`) and serve that"
            )
        self.source = Path(text).resolve()
        if not self.source.is_dir():
            raise ServerPreflightError(f"model repository {self.source} does not exist or is not a directory")
        self.path = Path(tempfile.mkdtemp(prefix="hermes-cpu-overlay-"))
        self.changes: list[str] = []
        self._linked: set[str] = set()
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"CpuOverlay({str(self.source)!r} -> {str(self.path)!r})"

    def refresh(self) -> list[str]:
        """Link in models added to the repository since the overlay was made.

        Returns:
            The instance-group changes made for the new models.
        """
        new: list[str] = []
        for entry in sorted(self.source.iterdir()):
            if entry.name in self._linked:
                continue
            self._linked.add(entry.name)
            new += self._add(entry)
        self.changes += new
        for line in new:
            logger.info("serving on the CPU: %s", line)
        return new

    def _add(self, entry: Path) -> list[str]:
        config = entry / "config.pbtxt"
        target = self.path / entry.name
        if not (entry.is_dir() and config.is_file()):
            target.symlink_to(entry)
            return []
        text = config.read_text(encoding="utf-8")
        rewritten, changes = _config_on_cpu(text, str(config))
        if not changes:
            target.symlink_to(entry)
            return []
        target.mkdir()
        for child in sorted(entry.iterdir()):
            if child.name != "config.pbtxt":
                (target / child.name).symlink_to(child)
        (target / "config.pbtxt").write_text(rewritten, encoding="utf-8")
        return changes

    def close(self) -> None:
        """Remove the overlay (the links only; the repository is untouched). Idempotent."""
        shutil.rmtree(self.path, ignore_errors=True)


def _config_on_cpu(text: str, where: str) -> tuple[str, list[str]]:
    """The config text with its GPU instance groups moved to the CPU, and what changed."""
    from hermes.quiver import ModelConfig, ModelConfigError

    try:
        config = ModelConfig.from_text(text, source=where)
    except ModelConfigError as exc:
        logger.warning("%s: left as written (%s)", where, exc)
        return text, []
    changes = config.move_instance_groups_to_cpu()
    return (config.to_text(), changes) if changes else (text, [])
