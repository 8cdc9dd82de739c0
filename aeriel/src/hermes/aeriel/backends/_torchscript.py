"""Run a TorchScript model with CPU torch, the way Triton's PyTorch (libtorch) backend maps names.

Inputs are passed positionally to ``forward``:

1. when every input name (state inputs included) ends in ``__<n>`` (``INPUT__0``), by ``n``;
2. else when ``forward``'s argument names cover them, in ``forward``'s order;
3. else the config's inputs in order, then the state inputs in ``sequence_batching.state`` order.

Outputs come from the returned tensor or tuple: by ``__<n>`` index when every output name
uses it, else the config's outputs in order followed by the state outputs in state order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hermes.aeriel.backends._config import BackendConfig
from hermes.aeriel.exceptions import BackendConfigError, BackendRequestError
from hermes.quiver.config import DataType

__all__ = ["TorchScriptModel", "input_order", "output_positions"]

_INDEXED = re.compile(r"__(\d+)$")


def _index(name: str) -> int | None:
    match = _INDEXED.search(name)
    return int(match.group(1)) if match else None


def input_order(names: Sequence[str], forward_args: Sequence[str] | None) -> list[str]:
    """The input names in the order ``forward`` takes them (see the module docstring).

    Args:
        names: config inputs then state inputs.
        forward_args: ``forward``'s argument names without ``self``, if known.

    Raises:
        BackendConfigError: ``__<n>`` indices repeat.
    """
    indices = [_index(n) for n in names]
    if names and all(i is not None for i in indices):
        if len(set(indices)) != len(indices):
            raise BackendConfigError(f"input names {list(names)} repeat an __<n> index")
        return [n for _, n in sorted(zip(indices, names, strict=True))]  # type: ignore[type-var]
    if forward_args and set(names) <= set(forward_args):
        return [a for a in forward_args if a in names]
    return list(names)


def output_positions(names: Sequence[str]) -> dict[str, int]:
    """``{output name: index into the returned tuple}`` (see the module docstring).

    Args:
        names: config outputs then state outputs.
    """
    indices = [_index(n) for n in names]
    if names and all(i is not None for i in indices):
        return {n: int(i) for n, i in zip(names, indices, strict=True) if i is not None}
    return {n: position for position, n in enumerate(dict.fromkeys(names))}


class TorchScriptModel:
    """A ``torch.jit`` module called with and returning numpy arrays by name.

    Thread settings come from the config's ``parameters`` as in Triton's PyTorch backend:
    ``INTRA_OP_THREAD_COUNT`` (``torch.set_num_threads``; unset, with several instances, the CPUs
    shared among them, :meth:`BackendConfig.threads_per_call`) and ``INTER_OP_THREAD_COUNT``;
    ``ENABLE_INFERENCE_MODE`` (default true) picks ``torch.inference_mode`` over ``no_grad``.
    ``TYPE_BF16`` tensors travel as float32 arrays and are converted at the model boundary.

    Args:
        path: the ``model.pt`` file.
        config: the model configuration.

    Raises:
        BackendConfigError: the module cannot take the configured inputs.
        ImportError: torch is not installed.
    """

    def __init__(self, path: str | Path, config: BackendConfig):
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is the user's install
            raise ImportError("the portable pytorch backend needs torch (pip install torch)") from exc
        self._torch = torch
        self.threads = config.threads_per_call("INTRA_OP_THREAD_COUNT")  # 0: torch's default
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        inter = config.int_parameter("INTER_OP_THREAD_COUNT", default=0)
        if inter > 0:
            try:
                torch.set_num_interop_threads(inter)
            except RuntimeError:  # already set, or parallel work already started
                pass
        self.inference_mode = config.bool_parameter("ENABLE_INFERENCE_MODE", default=True)
        self.module = torch.jit.load(str(path), map_location="cpu")
        self.module.eval()
        names = [t.name for t in config.inputs] + [s.input_name for s in config.states]
        self.inputs = input_order(names, _forward_args(self.module))
        outputs = [t.name for t in config.outputs] + [s.output_name for s in config.states]
        self.outputs = output_positions(outputs)
        self.bf16 = {t.name for t in (*config.inputs, *config.outputs) if t.dtype is DataType.BF16}
        self.bf16 |= {s.input_name for s in config.states if s.dtype is DataType.BF16}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once: ``{input name: array} -> {output name: array}``."""
        torch = self._torch
        args = []
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name]))
            if name in self.bf16:
                tensor = tensor.to(torch.bfloat16)
            args.append(tensor)
        context = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with context:
            result = self.module(*args)
        values: Sequence[Any] = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        out = {}
        for name, position in self.outputs.items():
            if position >= len(values):
                raise BackendRequestError(
                    f"output {name!r} is result {position} of forward(), which returned {len(values)} value(s)"
                )
            tensor = values[position].detach().cpu()
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            out[name] = tensor.numpy()
        return out


def _forward_args(module: Any) -> list[str] | None:
    try:
        arguments = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return None
    return [a.name for a in arguments if a.name != "self"]
