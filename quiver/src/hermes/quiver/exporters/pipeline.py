"""Drive an exporter: resolve tensors, export to scratch, verify, move into the repository.

```
module + examples ──resolve──▶ ExportSpec + config (a copy)
        │                              │
        ▼                              ▼
   eager outputs            exporter.export ──▶ scratch dir (local tmp)
        │                              │
        └──────── compare ◀── exporter.runner (batch 1, max batch)
                     │ pass
                     ▼
 storage: <model>/.hermes-tmp-<id>/ ──config.pbtxt──▶ move to <model>/<version>/
```
A failure anywhere leaves the repository (and the model's config) as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hermes.quiver._types import Shape
from hermes.quiver.config import DataType, ModelConfig
from hermes.quiver.exceptions import (
    ExportError,
    ModelConfigError,
    QuiverError,
    RepositoryError,
    VerificationError,
)
from hermes.quiver.exporters._torch_utils import flatten_outputs, forward_parameter_names, to_numpy, torch
from hermes.quiver.exporters.base import Exporter, ExportSpec
from hermes.quiver.verification import DEFAULT_ATOL, DEFAULT_RTOL, VerificationReport, compare_outputs

if TYPE_CHECKING:
    from hermes.quiver.model import Model

__all__ = ["ExportResult", "export_module"]

logger = logging.getLogger("hermes.quiver.export")

_VARIABLE_DIM_SIZE = 8  # size used for non-batch variable dims when inputs are generated from shapes
TMP_PREFIX = ".hermes-tmp-"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What ``export_version`` wrote.

    Attributes:
        model: the model name.
        version: the version written.
        path: the version folder (a path or URL).
        report: the verification report (``None`` when ``verify=False``).
    """

    model: str
    version: int
    path: str
    report: VerificationReport | None

    def __str__(self) -> str:
        text = f"exported {self.model} version {self.version} to {self.path}"
        return f"{text}\n{self.report}" if self.report is not None else text


def _as_tensor(value: Any, what: str) -> Any:
    t = torch()
    if isinstance(value, t.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return t.from_numpy(np.ascontiguousarray(value))
    raise ExportError(f"{what}: expected a torch.Tensor or numpy array, got {type(value).__name__}")


def _random_input(shape: Sequence[int], dtype: DataType) -> Any:
    t = torch()
    generator = t.Generator().manual_seed(0)
    if dtype in (DataType.FP16, DataType.BF16, DataType.FP32, DataType.FP64):
        return t.randn(*shape, generator=generator).to(dtype.torch)
    if dtype is DataType.BOOL:
        return t.randint(0, 2, tuple(shape), generator=generator).bool()
    if dtype is DataType.BYTES:
        raise ExportError("BYTES inputs cannot be generated; pass example_inputs")
    return t.randint(0, 10, tuple(shape), generator=generator).to(dtype.torch)


def _resolve_inputs(
    module: Any,
    config: ModelConfig,
    input_shapes: Mapping[str, Shape] | Sequence[Shape] | None,
    example_inputs: Any,
    batch: int,
) -> tuple[list[str], list[Any]]:
    """Input names (in forward order) and example tensors."""
    declared = config.inputs
    forward_names = forward_parameter_names(module)
    if example_inputs is not None and input_shapes is not None:
        raise ExportError("give example_inputs or input_shapes, not both")

    def default_names(count: int) -> list[str]:
        if declared:
            if len(declared) != count:
                raise ModelConfigError(
                    f"input: the config declares {len(declared)} inputs {[d.name for d in declared]} "
                    f"but {count} were given"
                )
            return [d.name for d in declared]
        if len(forward_names) >= count:
            return forward_names[:count]
        return [f"input_{i}" for i in range(count)]

    if example_inputs is not None:
        names, tensors = _given_examples(example_inputs, default_names)
    else:
        names, tensors = _drawn_examples(config, input_shapes, batch, default_names)
    if declared and sorted(names) != sorted(d.name for d in declared):
        raise ModelConfigError(
            f"input: the config declares {[d.name for d in declared]} but the inputs given are named {names}"
        )
    # call the module with its arguments in forward's order when the names are its parameters
    if set(names) <= set(forward_names):
        order = [n for n in forward_names if n in names]
        tensors = [tensors[names.index(n)] for n in order]
        names = order
    return names, tensors


def _given_examples(
    example_inputs: Any, default_names: Callable[[int], list[str]]
) -> tuple[list[str], list[Any]]:
    """Names and tensors of ``example_inputs`` (a mapping, a sequence or one tensor)."""
    if isinstance(example_inputs, Mapping):
        names = [str(k) for k in example_inputs]
        return names, [_as_tensor(v, f"example_inputs[{k!r}]") for k, v in example_inputs.items()]
    items = [example_inputs] if not isinstance(example_inputs, (tuple, list)) else list(example_inputs)
    return default_names(len(items)), [_as_tensor(v, f"example_inputs[{i}]") for i, v in enumerate(items)]


def _drawn_examples(
    config: ModelConfig,
    input_shapes: Mapping[str, Shape] | Sequence[Shape] | None,
    batch: int,
    default_names: Callable[[int], list[str]],
) -> tuple[list[str], list[Any]]:
    """Names and random tensors of ``input_shapes`` (default: the declared inputs' shapes)."""
    declared = config.inputs
    if input_shapes is None:
        if not declared:
            raise ExportError(
                f"{config.name}: the config declares no inputs; pass example_inputs (preferred) or input_shapes"
            )
        batched = config.max_batch_size > 0
        input_shapes = {
            d.name: ((None,) if batched else ()) + tuple(None if x < 0 else x for x in d.dims)
            for d in declared
        }
    shapes: list[Any]
    if isinstance(input_shapes, Mapping):
        names = [str(k) for k in input_shapes]
        shapes = list(input_shapes.values())
    else:
        shapes = list(input_shapes)
        if shapes and all(isinstance(s, int) or s is None for s in shapes):
            shapes = [tuple(shapes)]  # a single shape given flat
        names = default_names(len(shapes))
    dtypes = {d.name: d.dtype for d in declared}
    tensors = []
    for name, shape in zip(names, shapes, strict=True):
        _check_batch_axis(config, name, shape)
        concrete = [
            batch
            if (i == 0 and d is None and config.max_batch_size > 0)
            else (d if d not in (None, -1) else _VARIABLE_DIM_SIZE)
            for i, d in enumerate(shape)
        ]
        tensors.append(_random_input(concrete, dtypes.get(name, DataType.FP32)))
    return names, tensors


def _check_batch_axis(config: ModelConfig, name: str, shape: Any) -> None:
    """A batched model's request shapes start with the batch axis: ``None`` (or -1), never a size."""
    mbs = config.max_batch_size
    if mbs > 0 and (len(shape) == 0 or shape[0] not in (None, -1)):
        shape = tuple(shape)
        raise ModelConfigError(
            f"input_shapes[{name!r}] is {shape}, but with max_batch_size={mbs} the first axis is the batch "
            f"axis and must be None: write {(None, *shape)} for samples of shape {shape}, or "
            f"{(None, *shape[1:])} if {shape[0] if shape else '?'} is the batch; or set max_batch_size=0 for "
            "a model without a batch axis"
        )


def _run_eager(
    model_name: str, module: Any, names: Sequence[str], inputs: Sequence[Any], config: ModelConfig
) -> Any:
    """``module(*inputs)``; a failure names the model, every input's shape and dtype and the declaration."""
    t = torch()
    try:
        with t.inference_mode():
            return module(*inputs)
    except Exception as exc:
        given = ", ".join(
            f"{n} {tuple(x.shape)} {x.dtype}".replace("torch.", "")
            for n, x in zip(names, inputs, strict=True)
        )
        declared = ", ".join(f"{d.name} {list(d.dims)} {d.dtype.value}" for d in config.inputs) or "none"
        batch = (
            f" plus the batch axis (max_batch_size={config.max_batch_size})" if config.max_batch_size else ""
        )
        raise ExportError(
            f"{model_name}: the module fails on the example inputs ({given}); the config declares inputs "
            f"{declared}{batch}. Check the shapes and dtypes the module expects: {type(exc).__name__}: {exc}"
        ) from exc


def _at_batch(tensors: Sequence[Any], batch: int) -> list[Any]:
    """The examples at ``batch`` rows, repeating the given rows cyclically."""
    t = torch()
    out = []
    for x in tensors:
        index = t.arange(batch) % x.shape[0]
        out.append(x[index].contiguous())
    return out


def _check_declared(
    config: ModelConfig, kind: str, name: str, dims: tuple[int, ...], dtype: DataType
) -> bool:
    """Compare a tensor with its declaration; returns False if not declared."""
    specs = {s.name: s for s in (config.inputs if kind == "input" else config.outputs)}
    if name not in specs:
        return False
    spec = specs[name]
    if spec.dtype is not dtype:
        raise ModelConfigError(
            f"{kind}[{name}].data_type: the config says {spec.dtype.value}, the module uses {dtype.value}"
        )
    if len(spec.dims) != len(dims) or any(a != -1 and a != b for a, b in zip(spec.dims, dims, strict=False)):
        raise ModelConfigError(
            f"{kind}[{name}].dims: the config says {list(spec.dims)}, the module gives {list(dims)}"
        )
    return True


def export_module(
    model: Model,
    module: Any,
    exporter: Exporter,
    *,
    version: int | None = None,
    input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None,
    example_inputs: Any = None,
    output_names: Sequence[str] | None = None,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    allow_non_finite: bool = False,
    verify_draws: int = 4,
    verify_inputs: Sequence[Any] = (),
) -> ExportResult:
    """Export ``module`` as a new version of ``model``; see :meth:`hermes.quiver.Model.export_version`."""
    _check_arguments(model, module, output_names, verify_draws)
    module.eval()
    config = model.config.copy()
    mbs = config.max_batch_size
    batched = mbs > 0
    export_batch = max(2, mbs) if mbs > 1 else 1
    names, examples = _resolve_inputs(module, config, input_shapes, example_inputs, export_batch)
    for name, x in zip(names, examples, strict=True):
        if batched and x.ndim == 0:
            raise ExportError(
                f"input {name}: a batched model (max_batch_size={mbs}) needs a batch axis, got a scalar"
            )
    export_inputs = _at_batch(examples, export_batch) if batched else list(examples)
    eager, dict_names = flatten_outputs(_run_eager(model.name, module, names, export_inputs, config))
    out_names = _output_names(model.name, exporter, config, output_names, dict_names, names, len(eager))
    _declare_tensors(config, names, examples, out_names, eager, export_batch)
    spec = ExportSpec(
        model_name=model.name,
        input_names=tuple(names),
        input_dtypes=tuple(DataType.of(x.dtype) for x in examples),
        output_names=tuple(out_names),
        max_batch_size=mbs,
    )
    exporter.prepare_config(config, spec)
    version = _new_version(model, version)
    with tempfile.TemporaryDirectory(prefix="hermes-export-") as scratch:
        directory = Path(scratch)
        _export(model.name, exporter, module, export_inputs, spec, directory)
        report = None
        if verify:
            sets = _input_sets(examples, spec.input_names, verify_inputs, verify_draws)
            report = _verify(
                model.name, module, exporter, directory, spec, sets,
                atol=atol, rtol=rtol, allow_non_finite=allow_non_finite,
            )  # fmt: skip
        _commit(model, config, directory, version)
    result = ExportResult(
        model=model.name, version=version, path=model.storage.display(model.name, str(version)), report=report
    )
    logger.info("%s", result)
    return result


def _check_arguments(
    model: Model, module: Any, output_names: Sequence[str] | None, verify_draws: int
) -> None:
    if not isinstance(module, torch().nn.Module):
        raise ExportError(f"{model.name}: expected a torch.nn.Module, got {type(module).__name__}")
    if isinstance(output_names, str):
        raise ExportError(
            f"{model.name}: output_names must be a list of names, got the string {output_names!r}; "
            f"write output_names=[{output_names!r}]"
        )
    if isinstance(verify_draws, bool) or not isinstance(verify_draws, int) or verify_draws < 0:
        raise ExportError(f"verify_draws: expected an integer >= 0, got {verify_draws!r}")


def _output_names(
    model_name: str,
    exporter: Exporter,
    config: ModelConfig,
    given: Sequence[str] | None,
    dict_names: Sequence[str] | None,
    input_names: Sequence[str],
    count: int,
) -> list[str]:
    """The outputs' names: given, else declared, else the returned dict's keys, else the exporter's."""
    declared = [o.name for o in config.outputs]
    if given is not None:
        names = list(given)
    elif declared:
        names = declared
    elif dict_names is not None:
        names = list(dict_names)
    else:
        names = [exporter.default_output_name(i) for i in range(count)]
    if len(names) != count:
        raise ExportError(f"{model_name}: {len(names)} output names {names} for {count} outputs")
    if len(set(names)) != len(names) or len(set(input_names)) != len(input_names):
        raise ExportError(f"{model_name}: tensor names must be unique, got {list(input_names)} -> {names}")
    return names


def _declare_tensors(
    config: ModelConfig,
    names: Sequence[str],
    examples: Sequence[Any],
    out_names: Sequence[str],
    eager: Sequence[Any],
    export_batch: int,
) -> None:
    """Declare the inputs and outputs the config lacks; check those it declares."""
    mbs = config.max_batch_size
    batched = mbs > 0
    for name, x in zip(names, examples, strict=True):
        dims, dtype = tuple(x.shape[1:] if batched else x.shape), DataType.of(x.dtype)
        if not _check_declared(config, "input", name, dims, dtype):
            config.add_input(name, dims, dtype)
    for name, y in zip(out_names, eager, strict=True):
        if batched and (y.ndim == 0 or y.shape[0] != export_batch):
            raise ExportError(
                f"output {name}: shape {tuple(y.shape)} has no batch axis of size {export_batch} for a batched "
                f"model (max_batch_size={mbs}); set max_batch_size=0 or return a batch"
            )
        dims, dtype = tuple(y.shape[1:] if batched else y.shape), DataType.of(y.dtype)
        if not _check_declared(config, "output", name, dims, dtype):
            config.add_output(name, dims, dtype)


def _new_version(model: Model, version: int | None) -> int:
    if version is None:
        version = max(model.versions, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version: expected an integer >= 1, got {version!r}")
    if version in model.versions:
        raise RepositoryError(
            f"{model.storage.display(model.name, str(version))}: version {version} exists; remove it first"
        )
    return version


def _export(
    model_name: str, exporter: Exporter, module: Any, inputs: Sequence[Any], spec: ExportSpec, directory: Path
) -> None:
    try:
        exporter.export(module, tuple(inputs), spec, directory)
    except QuiverError:
        raise
    except Exception as exc:
        raise ExportError(
            f"{model_name}: {exporter.platform.value} export failed: {type(exc).__name__}: {exc}"
        ) from exc


def _draw(examples: Sequence[Any], seed: int) -> list[Any]:
    """Random inputs shaped and typed like ``examples`` (draw ``seed``).

    Floats are normal draws and an even draw negates the previous one (antithetic), so a
    sign-dependent branch is taken both ways; booleans likewise flip; integers are drawn from
    the values the examples hold (indices and categories stay valid).
    """
    t = torch()
    base = (seed + 1) // 2
    generator = t.Generator().manual_seed(1000 + base)
    out = []
    for x in examples:
        if x.dtype.is_floating_point:
            y = t.randn(*x.shape, generator=generator).to(x.dtype) * (1.0 + base)
            out.append(-y if seed % 2 == 0 else y)
        elif x.dtype == t.bool:
            y = t.randint(0, 2, tuple(x.shape), generator=generator).bool()
            out.append(~y if seed % 2 == 0 else y)
        elif x.numel():
            # integers are often indices or categories: draw from the values the examples hold
            picks = t.randint(0, x.numel(), tuple(x.shape), generator=generator)
            out.append(x.reshape(-1)[picks])
        else:
            out.append(x.clone())
    return out


def _input_sets(
    examples: Sequence[Any], names: Sequence[str], extra: Sequence[Any], draws: int
) -> list[tuple[str, list[Any]]]:
    """``(label, tensors)`` of every input set verification runs."""
    sets: list[tuple[str, list[Any]]] = [("examples", list(examples))]
    for i, given in enumerate(extra):
        if isinstance(given, Mapping):
            missing = sorted(set(names) - {str(k) for k in given})
            if missing:
                raise ExportError(
                    f"verify_inputs[{i}]: missing inputs {missing}; the model takes {list(names)}"
                )
            tensors = [_as_tensor(given[n], f"verify_inputs[{i}][{n!r}]") for n in names]
        else:
            items = [given] if not isinstance(given, (tuple, list)) else list(given)
            if len(items) != len(names):
                raise ExportError(f"verify_inputs[{i}]: {len(items)} tensors for the inputs {list(names)}")
            tensors = [_as_tensor(v, f"verify_inputs[{i}][{j}]") for j, v in enumerate(items)]
        sets.append((f"given {i}", tensors))
    for k in range(1, draws + 1):
        label = f"draw {k} (-draw {k - 1})" if k % 2 == 0 else f"draw {k}"
        sets.append((label, _draw(examples, k)))
    return sets


def _verify(
    name: str,
    module: Any,
    exporter: Exporter,
    directory: Path,
    spec: ExportSpec,
    input_sets: Sequence[tuple[str, Sequence[Any]]],
    *,
    atol: float,
    rtol: float,
    allow_non_finite: bool = False,
) -> VerificationReport:
    t = torch()
    try:
        run = exporter.runner(directory, spec)
    except QuiverError:
        raise
    except Exception as exc:
        raise ExportError(
            f"{name}: the exported {exporter.platform.value} artifact does not load: {exc}"
        ) from exc
    batches: list[int | None] = [None]
    if spec.batched:
        batches = [1, spec.max_batch_size] if spec.max_batch_size > 1 else [1]
    comparisons = []
    for label, examples in input_sets:
        for batch in batches:
            inputs = _at_batch(examples, batch) if batch is not None else list(examples)
            try:
                with t.inference_mode():
                    eager, _ = flatten_outputs(module(*inputs))
            except Exception as exc:
                raise ExportError(
                    f"{name}: the module itself fails on the {label} inputs at batch size {batch}: "
                    f"{type(exc).__name__}: {exc}; pass verify_inputs=[...] with valid inputs and "
                    "verify_draws=0 if random inputs are not valid for it"
                ) from exc
            expected = {n: to_numpy(y) for n, y in zip(spec.output_names, eager, strict=True)}
            try:
                actual = run({n: to_numpy(x) for n, x in zip(spec.input_names, inputs, strict=True)})
            except Exception as exc:
                raise ExportError(
                    f"{name}: running the exported {exporter.platform.value} artifact at batch size {batch} "
                    f"on the {label} inputs failed: {type(exc).__name__}: {exc}"
                ) from exc
            found = compare_outputs(
                expected, actual, batch_size=batch, atol=atol, rtol=rtol, allow_non_finite=allow_non_finite
            )
            comparisons += [dataclasses.replace(c, inputs=label) for c in found]
    report = VerificationReport(
        model=name, platform=exporter.platform.value, atol=atol, rtol=rtol, comparisons=tuple(comparisons)
    )
    if not report.passed:
        logger.error("%s", report)
        raise VerificationError(
            f"{name}: the export does not compute what the module computes; nothing was written\n{report}",
            report=report,
        )
    logger.info("%s", report)
    return report


def _commit(model: Model, config: ModelConfig, directory: Path, version: int) -> None:
    """Write the version under a temporary name, then the config, then move it into place."""
    storage = model.storage
    tmp = f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    old_text = model.config.to_text()
    try:
        storage.put_dir(directory, model.name, tmp)
        model.config.proto.CopyFrom(config.proto)
        model.config.write()
        storage.move((model.name, tmp), (model.name, str(version)))
    except BaseException:
        storage.remove(model.name, tmp)
        if model.config.to_text() != old_text:
            model.config.proto.CopyFrom(config.from_text(old_text).proto)
            model.config.write()
        raise
