"""Ensembles: a DAG of models wired by ``add_input``, ``pipe`` and ``add_output``.

```python
ensemble = repo.add("pipeline", platform=Platform.ENSEMBLE)
ensemble.add_input(pre.inputs["x"])                       # ensemble input "x" -> pre
ensemble.pipe(pre.outputs["y"], net.inputs["y"])          # pre -> net
ensemble.add_output(net.outputs["OUTPUT__0"], key="out")  # net -> ensemble output "out"
ensemble.export_version(None)
```
Each step is one (model, version) pair, so one model can appear at two versions (a canary
beside production). Shapes and types are checked when tensors are wired, and the errors
name both tensors.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver._legacy import positional_to_keywords, refuse_positional, rename_keyword
from hermes.quiver._types import Shape, shape_to_dims
from hermes.quiver.config.model_config import check_tensor_name
from hermes.quiver.exceptions import EnsembleError, ExportError
from hermes.quiver.model import ExposedTensor, Model
from hermes.quiver.platform import Platform

if TYPE_CHECKING:
    from hermes.quiver.exporters.pipeline import ExportResult
    from hermes.quiver.streaming.ensemble import (
        StreamingInputGroup,
        StreamingInputOptions,
        StreamingOutput,
        StreamingOutputOptions,
    )

__all__ = ["EnsembleModel"]


def _fmt(tensor: ExposedTensor) -> str:
    return f"{tensor.model.name}.{tensor.name} {list(tensor.shape)} {tensor.dtype.value}"


def shapes_compatible(a: Shape, b: Shape) -> bool:
    """Equal rank, and equal sizes wherever both are fixed."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


class EnsembleModel(Model):
    """A Triton ensemble (``platform: "ensemble"``); see the module docstring."""

    # -- steps ---------------------------------------------------------------------------

    @property
    def steps(self) -> list[tuple[str, int]]:
        """``(model name, version)`` of each step, in order (version -1 means latest)."""
        return [(s.model_name, int(s.model_version)) for s in self.config.proto.ensemble_scheduling.step]

    @property
    def models(self) -> list[Model]:
        """The member models, in step order (each once)."""
        seen: list[str] = []
        for name, _ in self.steps:
            if name not in seen:
                seen.append(name)
        return [self.repository.models[name] for name in seen]

    def _step(self, model: Model, version: int | None) -> pb.ModelEnsembling.Step:
        if model is self or model.name == self.name:
            raise EnsembleError(f"{self.name}: an ensemble cannot be a step of itself")
        if (
            model.repository is not self.repository
            and model.repository.storage.url != self.repository.storage.url
        ):
            raise EnsembleError(f"{self.name}: {model.name} belongs to another repository")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise EnsembleError(
                f"{self.name}: step version of {model.name} must be an integer >= 1 or None, got {version!r}"
            )
        wanted = -1 if version is None else version
        for step in self.config.proto.ensemble_scheduling.step:
            if step.model_name == model.name and step.model_version == wanted:
                return step
        return self.config.proto.ensemble_scheduling.step.add(model_name=model.name, model_version=wanted)

    def _keys(self) -> set[str]:
        """Every ensemble tensor name in use: inputs, outputs and intermediate keys."""
        keys = {t.name for t in self.config.proto.input} | {t.name for t in self.config.proto.output}
        for step in self.config.proto.ensemble_scheduling.step:
            keys |= set(step.input_map.values()) | set(step.output_map.values())
        return keys

    def _check_batching(self, tensor: ExposedTensor) -> None:
        if self.config.max_batch_size > 0:
            member = tensor.model.config.max_batch_size
            if member == 0:
                raise EnsembleError(
                    f"{self.name}: max_batch_size {self.config.max_batch_size} but {tensor.model.name} has no batch "
                    "axis (max_batch_size 0); set the ensemble's max_batch_size to 0"
                )
            if member < self.config.max_batch_size:
                raise EnsembleError(
                    f"{self.name}: max_batch_size {self.config.max_batch_size} exceeds {tensor.model.name}'s {member}"
                )

    # -- wiring --------------------------------------------------------------------------

    def add_input(
        self, input: ExposedTensor, *positional: Any, key: str | None = None, version: int | None = None
    ) -> ExposedTensor:
        """Expose a member model's input as an ensemble input.

        Args:
            input: the member's input (``model.inputs[name]``).
            key: the ensemble input name (default: the member's input name). An existing
                ensemble input of the same shape and type is reused, so one input can feed
                several models. Keyword only.
            version: the member's version for this step (default: latest). Keyword only.

        Returns:
            The ensemble's input.

        Raises:
            TypeError: ``key`` or ``version`` given by position (the predecessor took
                ``(input, version, key)``; a positional call would swap them).
        """
        refuse_positional(
            "EnsembleModel.add_input",
            positional,
            "add_input(tensor, key=..., version=...)",
            "(input, version, key)",
        )
        if input.name not in {t.name for t in input.model.config.proto.input}:
            raise EnsembleError(f"{self.name}: {input.model.name} has no input {input.name!r}")
        self._check_batching(input)
        key = key or input.name
        check_tensor_name("input", key)  # before a step is added for it
        existing = {t.name: t for t in self.inputs.values()}
        if key in existing:
            if (
                not shapes_compatible(existing[key].shape, input.shape)
                or existing[key].dtype is not input.dtype
            ):
                raise EnsembleError(
                    f"{self.name}: ensemble input {key!r} {list(existing[key].shape)} {existing[key].dtype.value} "
                    f"cannot feed {_fmt(input)}"
                )
        elif key in self._keys():
            raise EnsembleError(f"{self.name}: the name {key!r} is already used by another ensemble tensor")
        step = self._step(input.model, version)
        if input.name in step.input_map:
            raise EnsembleError(
                f"{self.name}: {input.model.name}.{input.name} is already fed by {step.input_map[input.name]!r}"
            )
        if key not in existing:
            dims = shape_to_dims(input.shape, self.config.max_batch_size > 0, f"input[{key}].dims")
            self.config.add_input(key, dims, input.dtype)
        step.input_map[input.name] = key
        return self.inputs[key]

    def add_output(
        self, output: ExposedTensor, *positional: Any, key: str | None = None, version: int | None = None
    ) -> ExposedTensor:
        """Expose a member model's output as an ensemble output.

        Args:
            output: the member's output (``model.outputs[name]``).
            key: the ensemble output name (default: the member's output name); must be new.
                Keyword only.
            version: the member's version for this step (default: latest). Keyword only.

        Returns:
            The ensemble's output.

        Raises:
            TypeError: ``key`` or ``version`` given by position (see :meth:`add_input`).
        """
        refuse_positional(
            "EnsembleModel.add_output",
            positional,
            "add_output(tensor, key=..., version=...)",
            "(output, version, key)",
        )
        if output.name not in {t.name for t in output.model.config.proto.output}:
            raise EnsembleError(f"{self.name}: {output.model.name} has no output {output.name!r}")
        self._check_batching(output)
        if key is not None:
            check_tensor_name("output", key)  # before a step is added for it
        step = self._step(output.model, version)
        key = key or step.output_map.get(output.name) or output.name
        if key in {t.name for t in self.config.proto.output}:
            raise EnsembleError(f"{self.name}: the ensemble already has an output {key!r}")
        current = step.output_map.get(output.name)
        if current is not None and current != key:
            raise EnsembleError(
                f"{self.name}: {output.model.name}.{output.name} is already mapped to {current!r}, not {key!r}"
            )
        if current is None and key in self._keys():
            raise EnsembleError(f"{self.name}: the name {key!r} is already used by another ensemble tensor")
        dims = shape_to_dims(output.shape, self.config.max_batch_size > 0, f"output[{key}].dims")
        self.config.add_output(key, dims, output.dtype)
        step.output_map[output.name] = key
        return self.outputs[key]

    def pipe(
        self,
        outbound: ExposedTensor,
        inbound: ExposedTensor,
        key: str | None = None,
        *,
        outbound_version: int | None = None,
        inbound_version: int | None = None,
    ) -> str:
        """Feed one member's output to another member's input.

        Args:
            outbound: the producing model's output.
            inbound: the consuming model's input.
            key: the name of the intermediate tensor (default: the output's existing key, or
                its name, qualified by the model name when that is taken).
            outbound_version: the version of that step (default: latest).
            inbound_version: the version of that step (default: latest).

        Returns:
            The intermediate tensor's name.

        Raises:
            EnsembleError: shapes or types differ (names both tensors and both shapes), the
                input is already fed, or the key is taken.
        """
        self._check_pipe(outbound, inbound, same_step=outbound_version == inbound_version)
        out_step = self._step(outbound.model, outbound_version)
        in_step = self._step(inbound.model, inbound_version)
        if inbound.name in in_step.input_map:
            raise EnsembleError(
                f"{self.name}: {inbound.model.name}.{inbound.name} is already fed by {in_step.input_map[inbound.name]!r}"
            )
        key = self._output_key(out_step, outbound, key)
        in_step.input_map[inbound.name] = key
        return key

    def _check_pipe(self, outbound: ExposedTensor, inbound: ExposedTensor, *, same_step: bool) -> None:
        """Both tensors exist, are different steps, and agree in shape, type and batching."""
        if outbound.name not in {t.name for t in outbound.model.config.proto.output}:
            raise EnsembleError(f"{self.name}: {outbound.model.name} has no output {outbound.name!r}")
        if inbound.name not in {t.name for t in inbound.model.config.proto.input}:
            raise EnsembleError(f"{self.name}: {inbound.model.name} has no input {inbound.name!r}")
        if outbound.model.name == inbound.model.name and same_step:
            raise EnsembleError(f"{self.name}: cannot pipe {outbound.model.name} into itself")
        if not shapes_compatible(outbound.shape, inbound.shape):
            raise EnsembleError(
                f"{self.name}: cannot pipe {outbound.model.name}.{outbound.name} with shape {list(outbound.shape)} "
                f"into {inbound.model.name}.{inbound.name} with shape {list(inbound.shape)}"
            )
        if outbound.dtype is not inbound.dtype:
            raise EnsembleError(
                f"{self.name}: cannot pipe {outbound.model.name}.{outbound.name} ({outbound.dtype.value}) into "
                f"{inbound.model.name}.{inbound.name} ({inbound.dtype.value})"
            )
        self._check_batching(outbound)
        self._check_batching(inbound)

    def _output_key(self, out_step: Any, outbound: ExposedTensor, key: str | None) -> str:
        """The ensemble tensor ``outbound`` maps to: its existing key, or a new (checked) one."""
        current = out_step.output_map.get(outbound.name)
        if current is not None:
            if key is not None and key != current:
                raise EnsembleError(
                    f"{self.name}: {outbound.model.name}.{outbound.name} is already mapped to {current!r}, not {key!r}"
                )
            return str(current)
        if key is None:
            taken = outbound.name in self._keys()
            key = f"{outbound.model.name}.{outbound.name}" if taken else outbound.name
        if key in self._keys():
            raise EnsembleError(f"{self.name}: the name {key!r} is already used by another ensemble tensor")
        check_tensor_name("ensemble tensor", key)
        out_step.output_map[outbound.name] = key
        return key

    # -- streaming (hermes.quiver.streaming) ----------------------------------------------

    def add_streaming_inputs(
        self,
        inputs: ExposedTensor | Sequence[ExposedTensor],
        stride: int | None = None,
        batch_size: int = 1,
        name: str | None = None,
        *legacy: int,
        stream_size: int | None = None,
        **options: Unpack[StreamingInputOptions],
    ) -> StreamingInputGroup:
        """Feed ``inputs`` from a stateful snapshotter; see :func:`hermes.quiver.streaming.add_streaming_inputs`
        (``options`` are its keywords).

        The predecessor's ``stream_size=`` is accepted for ``stride=`` and its fifth positional
        ``streams_per_gpu`` for ``instances=``, each with a DeprecationWarning.
        """
        from hermes.quiver import streaming

        extra: dict[str, Any] = dict(options)
        stride = rename_keyword(
            {"stream_size": stream_size} if stream_size is not None else {},
            "stream_size", "stride", "add_streaming_inputs", current=stride,
        )  # fmt: skip
        if legacy:
            positional_to_keywords("add_streaming_inputs", legacy, ("streams_per_gpu",), extra)
        if stride is None:
            raise TypeError("add_streaming_inputs: missing stride= (samples between consecutive windows)")
        return streaming.add_streaming_inputs(self, inputs, stride, batch_size=batch_size, name=name, **extra)

    def add_streaming_output(
        self,
        output: ExposedTensor,
        stride: int | None = None,
        num_updates: int | None = None,
        *legacy: Any,
        name: str | None = None,
        update_size: int | None = None,
        **options: Unpack[StreamingOutputOptions],
    ) -> StreamingOutput:
        """Average ``output`` online into a stream; see :func:`hermes.quiver.streaming.add_streaming_output`
        (``options`` are its keywords).

        ``name`` is keyword only. The predecessor's positional form
        ``(output, update_size, num_updates, batch_size, name, streams_per_gpu)`` and its
        ``update_size=`` keep their meaning, with a DeprecationWarning naming the new spelling.
        """
        from hermes.quiver import streaming

        extra: dict[str, Any] = dict(options)
        stride = rename_keyword(
            {"update_size": update_size} if update_size is not None else {},
            "update_size", "stride", "add_streaming_output", current=stride,
        )  # fmt: skip
        if legacy:
            if len(legacy) > 1 and name is not None:
                raise TypeError("add_streaming_output: name given by position and by keyword")
            positional_to_keywords(
                "add_streaming_output", legacy, ("batch_size", "name", "streams_per_gpu"), extra
            )
            name = extra.pop("name", name)
        if stride is None or num_updates is None:
            raise TypeError("add_streaming_output: needs stride= and num_updates=")
        return streaming.add_streaming_output(self, output, stride, num_updates, name=name, **extra)

    # -- writing --------------------------------------------------------------------------

    def check(self) -> None:
        """Check the DAG is complete: every member input fed, at least one output.

        Raises:
            EnsembleError: naming the unfed inputs or the missing outputs.
        """
        if not self.config.proto.ensemble_scheduling.step:
            raise EnsembleError(f"{self.name}: the ensemble has no steps")
        if not self.config.proto.output:
            raise EnsembleError(f"{self.name}: the ensemble has no outputs; call add_output")
        unfed = []
        for step in self.config.proto.ensemble_scheduling.step:
            member = self.repository.models[step.model_name]
            for tensor in member.config.proto.input:
                if tensor.name not in step.input_map and not tensor.optional:
                    unfed.append(f"{step.model_name}.{tensor.name}")
        if unfed:
            raise EnsembleError(f"{self.name}: inputs fed by nothing: {unfed}; use add_input or pipe")

    def export_version(
        self, module: Any = None, version: int | None = None, *args: Any, **kwargs: Any
    ) -> ExportResult:  # type: ignore[override]
        """Check the ensemble, write its config and an (empty) version folder.

        Args:
            module: must be None (kept for the predecessor's ``export_version(None)``).
            version: the version (default: latest + 1).
        """
        if module is not None or args or kwargs:
            raise ExportError(
                f"{self.name}: an ensemble exports no module; call export_version() with no arguments"
            )
        if self.repository.models.get(self.name) is not self:
            raise ExportError(
                f"{self.name}: the ensemble is no longer in {self.repository.root} (a failed build step rolled "
                f"it back, or it was removed); start again with repo.add({self.name!r}, platform=Platform.ENSEMBLE)"
            )
        if self.versions:
            return self._export(version)
        from hermes.quiver.streaming.ensemble import _all_or_nothing

        with _all_or_nothing(self):  # the first export fails: nothing of the build is left behind
            return self._export(version)

    def _export(self, version: int | None) -> ExportResult:
        from hermes.quiver.exporters.pipeline import ExportResult, _commit

        self.check()
        if version is None:
            version = max(self.versions, default=0) + 1
        if version in self.versions:
            raise ExportError(f"{self.name}: version {version} exists")
        with tempfile.TemporaryDirectory(prefix="hermes-ensemble-") as scratch:
            (Path(scratch) / Platform.ENSEMBLE.filename).write_bytes(b"")
            _commit(self, self.config.copy(), Path(scratch), version)
        return ExportResult(
            model=self.name, version=version, path=self.storage.display(self.name, str(version)), report=None
        )
