"""``hermes repo ...`` and ``hermes export``: quiver's commands for the ``hermes`` CLI.

Registered through the ``hermes.cli`` entry points declared in hermes-quiver's pyproject:
``repo = hermes.quiver._cli:repo_app`` and ``export = hermes.quiver._cli:export_command``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hermes.quiver.exceptions import QuiverError, VerificationError
from hermes.quiver.model_repository import ModelRepository
from hermes.quiver.platform import Platform

if TYPE_CHECKING:
    from hermes.quiver.exporters.pipeline import ExportResult

__all__ = ["export_command", "repo_app"]

logger = logging.getLogger("hermes.quiver.cli")

repo_app = typer.Typer(help="Inspect Triton model repositories.", no_args_is_help=True)

_PLATFORM_ALIASES = {
    "onnx": Platform.ONNX,
    "torchscript": Platform.TORCHSCRIPT,
    "tensorrt": Platform.TENSORRT,
    "trt": Platform.TENSORRT,
    "python": Platform.PYTHON,
    "aoti": Platform.TORCH_AOTI,
}


def _tensors(tensors: Any) -> str:
    return "\n".join(
        f"{t.name} [{', '.join('-1' if d is None else str(d) for d in t.shape)}] {t.dtype.value}"
        for t in tensors.values()
    )


@repo_app.command("show")
def show(
    repo: str = typer.Argument(..., help="Repository path or URL (memory://, gs://, s3://)."),
) -> None:
    """Print a table of the models: versions, platforms, inputs and outputs."""
    from rich.console import Console
    from rich.table import Table

    try:
        repository = ModelRepository(repo)
    except QuiverError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title=f"{repository.root} ({len(repository)} models)")
    for column in ("model", "versions", "platform", "max batch", "inputs", "outputs"):
        table.add_column(column)
    for model in repository:
        table.add_row(
            model.name,
            ", ".join(map(str, model.versions)) or "-",
            model.platform.value,
            str(model.config.max_batch_size),
            _tensors(model.inputs) or "-",
            _tensors(model.outputs) or "-",
        )
    Console(width=160).print(table)


def _load_factory(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise typer.BadParameter(f"{spec!r}: expected package.module:factory")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"{spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise typer.BadParameter(f"{spec!r}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise typer.BadParameter(f"{spec!r}: {attr} is not callable")
    return target


def _parse_shapes(values: list[str]) -> dict[str, tuple[int | None, ...]]:
    shapes = {}
    for value in values:
        name, sep, dims = value.partition("=")
        try:
            shape = tuple(None if int(d) < 0 else int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            shape = None
        if not sep or not name or shape is None:
            raise typer.BadParameter(f"--input-shape {value!r}: expected NAME=D0,D1,... (-1 for variable)")
        shapes[name] = shape
    return shapes


def export_command(
    module: str = typer.Argument(..., help="package.module:factory returning a torch.nn.Module."),
    repo: str = typer.Option(..., "--repo", "-r", help="Repository path or URL."),
    name: str = typer.Option(..., "--name", "-n", help="Model name in the repository."),
    platform: str = typer.Option(
        "onnx", "--platform", "-p", help="onnx, torchscript, python, tensorrt or aoti."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", "-w", help="A state_dict file loaded into the module."
    ),
    factory_kwargs: str = typer.Option("{}", "--kwargs", help="JSON keyword arguments of the factory."),
    max_batch_size: int = typer.Option(0, "--max-batch-size", "-b", help="0: no batch axis."),
    input_shape: list[str] = typer.Option([], "--input-shape", "-i", help="NAME=-1,4 (repeat per input)."),
    example: Path | None = typer.Option(None, "--example", help="A .npz of example inputs, by input name."),
    version: int | None = typer.Option(None, "--version", help="Version to write (default: next)."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset."),
    method: str | None = typer.Option(None, "--method", help="TorchScript: trace or script."),
    accept_tracer_warnings: bool = typer.Option(
        False, "--accept-tracer-warnings", help="Go on when tracing warns (TorchScript trace, legacy ONNX)."
    ),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance of the verification."),
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance of the verification."),
) -> None:
    """Export a torch module to a repository and print the verification report."""
    from hermes.quiver._deps import require

    torch = require("torch", "hermes export")
    target = _platform(platform)
    factory = _load_factory(module)
    kwargs = _factory_kwargs(factory_kwargs)
    net = factory(**kwargs)
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    options = _export_options(
        opset=opset, method=method, accept_tracer_warnings=accept_tracer_warnings, atol=atol, rtol=rtol
    )
    if target is Platform.PYTHON:
        options |= {"module_kwargs": kwargs} if inspect.isclass(factory) else {"source": "module"}
    result = _export_into(
        repo, name, target, net, max_batch_size=max_batch_size, version=version,
        input_shapes=_parse_shapes(input_shape) or None, example_inputs=_load_examples(example),
        options=options,
    )  # fmt: skip
    typer.echo(str(result))


def _platform(value: str) -> Platform:
    """``--platform``: an alias (onnx, trt, ...) or a Triton platform name."""
    target = _PLATFORM_ALIASES.get(value.lower())
    if target is not None:
        return target
    try:
        return Platform(value)
    except ValueError:
        raise typer.BadParameter(
            f"--platform {value!r}: expected one of {sorted(_PLATFORM_ALIASES)}"
        ) from None


def _factory_kwargs(value: str) -> dict[str, Any]:
    try:
        kwargs = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--kwargs: not JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise typer.BadParameter(f"--kwargs: expected a JSON object of keyword arguments, got {value!r}")
    return kwargs


def _export_options(
    *, opset: int | None, method: str | None, accept_tracer_warnings: bool, atol: float | None,
    rtol: float | None,
) -> dict[str, Any]:  # fmt: skip
    """The exporter options given on the command line (the exporter's defaults for the others)."""
    options: dict[str, Any] = {"opset": opset, "method": method, "atol": atol, "rtol": rtol}
    if accept_tracer_warnings:
        options["tracer_warnings"] = "accept"
    return {key: value for key, value in options.items() if value is not None}


def _load_examples(path: Path | None) -> dict[str, Any] | None:
    """``--example``: the arrays of a .npz file, by input name."""
    if path is None:
        return None
    import numpy as np

    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _export_into(
    repo: str, name: str, target: Platform, net: Any, *, max_batch_size: int, version: int | None,
    input_shapes: dict[str, tuple[int | None, ...]] | None, example_inputs: dict[str, Any] | None,
    options: dict[str, Any],
) -> ExportResult:  # fmt: skip
    """Export ``net`` as a version of model ``name``; on failure the repository is left as it was."""
    created = False
    try:
        repository = ModelRepository(repo)
        created = name not in repository
        model = repository.add(name, platform=target) if created else repository.models[name]
        if model.platform is not target:
            raise typer.BadParameter(f"--name {name}: the model exists with platform {model.platform.value}")
        if max_batch_size:
            model.config.max_batch_size = max_batch_size
        return model.export_version(
            net, version=version, input_shapes=input_shapes, example_inputs=example_inputs, **options
        )
    except QuiverError as exc:
        if created:
            repository.remove(name)  # leave the repository as it was
        if isinstance(exc, VerificationError):
            typer.echo(str(exc.report))
            typer.echo(f"error: export of {name} failed verification; nothing was written", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
