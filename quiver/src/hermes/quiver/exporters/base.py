"""The exporter interface: write a module's artifact into a folder and run it back.

An exporter knows one platform. :func:`hermes.quiver.exporters.export_module` drives it:
resolve inputs and outputs, ``prepare_config``, ``export`` into a scratch folder, run the
artifact with ``runner`` for verification, then move the folder into the repository.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hermes.quiver.config import DataType, ModelConfig
from hermes.quiver.platform import Platform

__all__ = ["ExportSpec", "Exporter", "Runner"]

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
"""Runs an exported artifact: ``{input name: array}`` -> ``{output name: array}``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportSpec:
    """What an exporter needs to know about the model being exported.

    Attributes:
        model_name: the repository model name.
        input_names: inputs in the order the module's ``forward`` takes them.
        input_dtypes: their types.
        output_names: outputs in the order the module returns them.
        max_batch_size: 0 for an unbatched model; else axis 0 of every tensor is the batch.
    """

    model_name: str
    input_names: tuple[str, ...]
    input_dtypes: tuple[DataType, ...]
    output_names: tuple[str, ...]
    max_batch_size: int

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


class Exporter(abc.ABC):
    """Writes one platform's artifact. Subclasses take their options as keyword arguments.

    ``options`` names the keyword arguments ``__init__`` accepts (checked by ``get_exporter``).
    """

    platform: ClassVar[Platform]
    options: ClassVar[tuple[str, ...]] = ()

    def default_output_name(self, index: int) -> str:
        """The output name used when neither the config nor the caller names one."""
        return f"output_{index}"

    def prepare_config(self, config: ModelConfig, spec: ExportSpec) -> None:  # noqa: B027
        """Set platform-specific config fields (default: nothing)."""

    @abc.abstractmethod
    def export(self, module: Any, example_inputs: tuple[Any, ...], spec: ExportSpec, directory: Path) -> None:
        """Write the artifact (``self.platform.filename``, plus any helper files) into ``directory``.

        Args:
            module: the ``torch.nn.Module`` in eval mode.
            example_inputs: torch tensors in ``spec.input_names`` order, batch
                ``max(2, max_batch_size)`` for batched models.
            spec: names, types and batching.
            directory: an empty local scratch folder (becomes ``<model>/<version>/``).
        """

    @abc.abstractmethod
    def runner(self, directory: Path, spec: ExportSpec) -> Runner:
        """Load the artifact in ``directory`` and return a function that runs it."""
