"""The compute floor: the streamed network run in-process on the same windows, in the same batches.

For every stream and update, the windows the snapshotter would cut (``B`` windows of ``K``
samples per network input, from the same data) are fed to the network with onnxruntime or
torch in this process, one call per update, as fast as possible. The floor's seconds of data
per second is what serving can at best approach on the same cores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hermes.aeriel.exceptions import ProfileError
from hermes.aeriel.profile._target import StreamTarget

__all__ = ["FloorNetwork", "floor_rate", "load_network", "network_batches"]


class FloorNetwork:
    """A network loaded in-process: ``run({input: array}) -> outputs``."""

    def __init__(self, run: Any, inputs: list[str]):
        self.run = run
        self.inputs = inputs


def _int_parameter(config: Any, key: str) -> int:
    try:
        return int(config.parameters[key].string_value)
    except (KeyError, ValueError):
        return 0


def load_network(repository: str | Path, name: str) -> FloorNetwork:
    """Load model ``name`` (newest version) of a local repository with onnxruntime or torch, CPU.

    Thread settings follow its config, as the portable backends apply them.

    Raises:
        ProfileError: no such model, no version, or a platform other than ONNX/TorchScript.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    folder = Path(repository) / name
    if not (folder / "config.pbtxt").is_file():
        raise ProfileError(f"--floor: no model {name!r} in {repository}")
    config = text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    if not versions:
        raise ProfileError(f"--floor: model {name!r} has no version folder")
    version = folder / str(versions[-1])
    inputs = [i.name for i in config.input]
    if config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        intra = _int_parameter(config, "intra_op_thread_count")
        if intra > 0:
            options.intra_op_num_threads = intra
        session = ort.InferenceSession(
            str(version / (config.default_model_filename or "model.onnx")),
            options,
            providers=["CPUExecutionProvider"],
        )
        return FloorNetwork(lambda feeds: session.run(None, feeds), inputs)
    if config.platform == "pytorch_libtorch" or config.backend == "pytorch":
        import torch

        module = torch.jit.load(
            str(version / (config.default_model_filename or "model.pt")), map_location="cpu"
        )

        def run(feeds: dict[str, np.ndarray]) -> Any:
            with torch.inference_mode():
                return module(*[torch.from_numpy(feeds[n]) for n in inputs])

        return FloorNetwork(run, inputs)
    raise ProfileError(
        f"--floor runs ONNX and TorchScript networks in-process; {name!r} is {config.platform!r}"
    )


def network_batches(target: StreamTarget, data: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The network's feeds for every update of one stream: ``B`` windows per input, as the snapshotter cuts them."""
    from hermes.quiver.streaming import sliding_windows

    batches: list[dict[str, np.ndarray]] = []
    for group in target.groups:
        if not group.tensors or not group.kernel_size:
            raise ProfileError(
                f"--floor needs the windowing of {target.model!r} (quiver's streaming parameters); "
                f"input {group.input!r} has none"
            )
        windows = sliding_windows(data[group.input], kernel_size=group.kernel_size, stride=group.stride)
        start = 0
        for name, channels in group.tensors:
            width = channels or 1
            part = windows[:, start : start + width]
            part = part[:, 0] if channels is None else part
            start += width
            for u in range(len(part) // group.batch_size):
                if u == len(batches):
                    batches.append({})
                batches[u][name] = np.ascontiguousarray(
                    part[u * group.batch_size : (u + 1) * group.batch_size]
                )
    return batches


def floor_rate(
    network: FloorNetwork,
    target: StreamTarget,
    data: Sequence[dict[str, np.ndarray]],
    *,
    sample_rate: float = 4096.0,
) -> float:
    """Seconds of data per second running ``network`` over every stream's windows, one call per update."""
    feeds = [b for d in data for b in network_batches(target, d)]
    network.run(feeds[0])  # warm-up
    start = time.perf_counter()
    for feed in feeds:
        network.run(feed)
    wall = time.perf_counter() - start
    return len(feeds) * target.update_size / sample_rate / wall
