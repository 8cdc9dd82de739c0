"""A model in a repository: its config, versions, exposed tensors and exports."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hermes.quiver._types import Shape, dims_to_shape
from hermes.quiver.config import DataType, ModelConfig
from hermes.quiver.exceptions import RepositoryError
from hermes.quiver.platform import Platform
from hermes.quiver.verification import DEFAULT_ATOL, DEFAULT_RTOL

if TYPE_CHECKING:
    from hermes.quiver.exporters.pipeline import ExportResult
    from hermes.quiver.model_repository import ModelRepository
    from hermes.quiver.storage import Storage

__all__ = ["ExposedTensor", "Model"]

_VERSION = re.compile(r"^[1-9][0-9]*$")


@dataclasses.dataclass(frozen=True)
class ExposedTensor:
    """A handle on one input or output of a model, used to wire ensembles.

    Attributes:
        model: the model it belongs to.
        name: the tensor name.
        shape: the request shape; ``None`` marks a variable axis (the batch axis of a
            batched model included).
        dtype: its type.
    """

    model: Model = dataclasses.field(repr=False, compare=False)
    name: str
    shape: Shape
    dtype: DataType = DataType.FP32

    @property
    def model_name(self) -> str:
        return self.model.name

    def __repr__(self) -> str:
        return f"ExposedTensor({self.model.name}.{self.name}, shape={self.shape}, dtype={self.dtype.value})"


class Model:
    """One model folder of a :class:`~hermes.quiver.ModelRepository`.

    Get models from the repository (``repo.add(...)``, ``repo.models[name]``), not by
    constructing them.

    Attributes:
        repository: the repository holding it.
        name: the model (folder) name.
        config: its typed configuration; ``config.write()`` saves ``config.pbtxt``.
    """

    def __init__(self, repository: ModelRepository, name: str, config: ModelConfig) -> None:
        self.repository = repository
        self.name = name
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, platform={self.platform.value!r})"

    @property
    def platform(self) -> Platform:
        return self.config.platform

    @property
    def storage(self) -> Storage:
        return self.repository.storage

    @property
    def versions(self) -> list[int]:
        """The versions written (integer-named folders), ascending."""
        return sorted(int(n) for n in self.storage.listdir(self.name) if _VERSION.match(n))

    def _exposed(self, specs: Any) -> dict[str, ExposedTensor]:
        batched = self.config.max_batch_size > 0
        return {s.name: ExposedTensor(self, s.name, dims_to_shape(s.dims, batched), s.dtype) for s in specs}

    @property
    def inputs(self) -> dict[str, ExposedTensor]:
        """``{name: ExposedTensor}`` of the declared inputs, in order."""
        return self._exposed(self.config.inputs)

    @property
    def outputs(self) -> dict[str, ExposedTensor]:
        """``{name: ExposedTensor}`` of the declared outputs, in order."""
        return self._exposed(self.config.outputs)

    def write_warmup_file(self, filename: str, array: Any) -> str:
        """Write ``array``'s raw bytes to ``<model>/warmup/<filename>`` for ``add_warmup(data={...})``.

        Args:
            filename: the file name the warm-up config names.
            array: one sample (no batch axis) of the input's dtype and dims; Triton repeats it
                to the warm-up batch size.

        Returns:
            The file's path or URL.
        """
        return self._write_data_file("warmup", filename, array)

    def write_initial_state_file(self, filename: str, array: Any) -> str:
        """Write ``array``'s raw bytes to ``<model>/initial_state/<filename>`` for ``add_state(initial=...)``."""
        return self._write_data_file("initial_state", filename, array)

    def _write_data_file(self, folder: str, filename: str, array: Any) -> str:
        import numpy as np

        if not filename or "/" in filename or filename.startswith("."):
            raise RepositoryError(f"{folder} file name {filename!r}: expected a plain file name")
        data = np.ascontiguousarray(array)
        if data.dtype == object:
            raise RepositoryError(
                f"{folder}/{filename}: BYTES data files are not supported; pass a numeric array"
            )
        self.storage.write_bytes(data.tobytes(), self.name, folder, filename)
        return self.storage.display(self.name, folder, filename)

    def remove_version(self, version: int) -> None:
        """Delete one version folder.

        Raises:
            RepositoryError: the version does not exist.
        """
        if version not in self.versions:
            raise RepositoryError(
                f"{self.storage.display(self.name)}: no version {version}; versions are {self.versions}"
            )
        self.storage.remove(self.name, str(version))

    def export_version(
        self,
        module: Any,
        version: int | None = None,
        input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None,
        output_names: Sequence[str] | None = None,
        *,
        example_inputs: Any = None,
        verify: bool = True,
        atol: float = DEFAULT_ATOL,
        rtol: float = DEFAULT_RTOL,
        allow_non_finite: bool = False,
        verify_draws: int = 4,
        verify_inputs: Sequence[Any] = (),
        **exporter_options: Any,
    ) -> ExportResult:
        """Export a ``torch.nn.Module`` as a new version, verified against the module.

        The artifact is written to a scratch folder, run at batch size 1 and at
        ``max_batch_size`` (or once, for an unbatched model) on the example inputs, on any
        ``verify_inputs`` and on ``verify_draws`` independent random draws, and compared with
        the module; only then is it moved into ``<model>/<version>/`` and the config written.

        Args:
            module: the torch module (put in eval mode).
            version: the version to write (default: the latest + 1).
            input_shapes: request shapes (``None`` for the batch axis), by name or in order;
                random inputs are generated from them. Prefer ``example_inputs``.
            output_names: output names (default: the config's, the keys of a returned dict,
                or the exporter's default).
            example_inputs: real inputs: a tensor, a sequence of tensors or ``{name: tensor}``
                (numpy arrays accepted). For a batched model axis 0 is the batch; rows are
                repeated cyclically to reach ``max_batch_size``.
            verify: compare the artifact with the module (default True).
            atol: absolute tolerance of the comparison.
            rtol: relative tolerance of the comparison.
            allow_non_finite: accept NaN/inf outputs (at the same places in both); by default
                they fail the verification.
            verify_draws: independent random input draws verified besides the examples
                (default 4; each even draw is the negation of the one before, so a branch on
                the sign of the data is taken both ways). Listed in the report.
            verify_inputs: more input sets to verify, each shaped like ``example_inputs``.
            **exporter_options: per platform: TorchScript ``method``, ``tracer_warnings``
                (``"error"`` by default: a TracerWarning fails the export; or ``"accept"``);
                ONNX ``exporter``, ``opset``, ``optimize``, ``tracer_warnings``; python ``source``, ``module_args``,
                ``module_kwargs``, ``code_paths``; TensorRT ``fp16``, ``int8``,
                ``workspace_mib``; torch_aoti ``device``.

        Returns:
            The version written and the verification report.

        Raises:
            VerificationError: outputs differ beyond tolerance (the report is attached);
                nothing was written.
            ExportError: the export failed; nothing was written.
            ModelConfigError: the module's tensors contradict the declared config.
        """
        from hermes.quiver.exporters import get_exporter
        from hermes.quiver.exporters.pipeline import export_module

        exporter = get_exporter(self.platform, **exporter_options)
        return export_module(
            self,
            module,
            exporter,
            version=version,
            input_shapes=input_shapes,
            example_inputs=example_inputs,
            output_names=output_names,
            verify=verify,
            atol=atol,
            rtol=rtol,
            allow_non_finite=allow_non_finite,
            verify_draws=verify_draws,
            verify_inputs=verify_inputs,
        )
