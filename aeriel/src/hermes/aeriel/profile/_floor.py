"""The compute floor: the streamed network run in-process on the same windows, in the same batches.

For every stream and update, the windows the snapshotter would cut (``B`` windows of ``K``
samples per network input, from the same data) are fed to the network with onnxruntime or
torch in this process, as fast as possible, with the thread settings the portable backends
apply from the model's config. The floor's seconds of data per second is what serving can at
best approach on the same cores, so with several streams it is measured in the forms the
server can run them (see :data:`FloorForm`), after a warm-up of each batch shape. One pass
by default, like one served run: taking the fastest of several passes would compare the
floor's quietest moment with the server's typical one on a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hermes.aeriel.backends._config import fair_threads
from hermes.aeriel.exceptions import ProfileError
from hermes.aeriel.profile._target import StreamTarget

__all__ = ["FloorForm", "FloorNetwork", "floor_rate", "load_network", "network_batches"]

FloorForm = Literal["concurrent", "batched", "best"]
"""How several streams meet the network, as the server can run them.

* ``"concurrent"``: one call of ``B`` windows per stream and update, the streams' calls at the
  same time from one thread each, each stream on its own copy of the network with its share of
  the threads (one sequence per instance: the instances run in parallel, as the portable
  backends thread them);
* ``"batched"``: one call of ``n·B`` windows per update for ``n`` streams (batched state);
* ``"best"``: the faster of the two (for one stream they are the same).
"""


class FloorNetwork:
    """A network loaded in-process: ``run({input: array}) -> outputs``.

    ``max_batch_size`` is its config's (0: a fixed batch, which cannot take several streams' windows at once).
    ``instance(n)``, when given, loads one more copy of the network as one of ``n`` served
    instances runs it (its own session, its share of the threads).
    """

    def __init__(
        self,
        run: Any,
        inputs: list[str],
        max_batch_size: int = 0,
        instance: Callable[[int], Any] | None = None,
    ):
        self.run = run
        self.inputs = inputs
        self.max_batch_size = max_batch_size
        self._instance = instance

    def instances(self, count: int) -> list[Any]:
        """``count`` runs, one per concurrent stream, as ``count`` served instances would run them.

        Without ``instance`` (TorchScript: torch's threads are per process) the streams share ``run``.
        """
        if self._instance is None or count == 1:
            return [self.run] * count
        return [self._instance(count) for _ in range(count)]


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

        path = str(version / (config.default_model_filename or "model.onnx"))

        def instance(instances: int) -> Any:
            """One session with the portable onnxruntime backend's settings for one of ``instances``."""
            options = ort.SessionOptions()
            threads = fair_threads(_int_parameter(config, "intra_op_thread_count"), instances)
            if threads > 0:  # 0: onnxruntime's default
                options.intra_op_num_threads = threads
            inter = _int_parameter(config, "inter_op_thread_count")
            if inter > 0:
                options.inter_op_num_threads = inter
            if _int_parameter(config, "execution_mode") == 1:
                options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            return lambda feeds: session.run(None, feeds)

        return FloorNetwork(instance(1), inputs, config.max_batch_size, instance=instance)
    if config.platform == "pytorch_libtorch" or config.backend == "pytorch":
        import torch

        module = torch.jit.load(
            str(version / (config.default_model_filename or "model.pt")), map_location="cpu"
        )

        def run(feeds: dict[str, np.ndarray]) -> Any:
            with torch.inference_mode():
                return module(*[torch.from_numpy(feeds[n]) for n in inputs])

        return FloorNetwork(run, inputs, config.max_batch_size)
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


def _timed(passes: int, run_once: Any) -> float:
    """The fastest of ``passes`` runs of ``run_once()``, seconds."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        run_once()
        best = min(best, time.perf_counter() - start)
    return best


def _concurrent_s(runs: list[Any], streams: list[list[dict[str, np.ndarray]]], passes: int) -> float:
    """Each stream through its own run (``FloorNetwork.instances``), all at once."""

    def run_stream(run: Any, feeds: list[dict[str, np.ndarray]]) -> None:
        for feed in feeds:
            run(feed)

    if len(streams) == 1:
        return _timed(passes, lambda: run_stream(runs[0], streams[0]))
    with ThreadPoolExecutor(len(streams), thread_name_prefix="hermes-floor") as pool:

        def run_once() -> None:
            for future in [
                pool.submit(run_stream, run, feeds) for run, feeds in zip(runs, streams, strict=True)
            ]:
                future.result()

        return _timed(passes, run_once)


def _batched_s(network: FloorNetwork, streams: list[list[dict[str, np.ndarray]]], passes: int) -> float:
    """One call of every stream's windows per update."""
    updates = min(len(feeds) for feeds in streams)
    joined = [
        {name: np.concatenate([feeds[u][name] for feeds in streams]) for name in streams[0][u]}
        for u in range(updates)
    ]
    return _timed(passes, lambda: [network.run(feed) for feed in joined])


def floor_rate(
    network: FloorNetwork,
    target: StreamTarget,
    data: Sequence[dict[str, np.ndarray]],
    *,
    sample_rate: float = 4096.0,
    form: FloorForm = "best",
    passes: int = 1,
    warm_up: int = 3,
) -> float:
    """Seconds of data per second running ``network`` over every stream's windows (all streams together).

    Args:
        network: the network, loaded by :func:`load_network`.
        target: the streaming model whose windowing is reproduced.
        data: per stream ``{update input: (C, T)}`` (see ``make_data``).
        sample_rate: samples per second of the data.
        form: how several streams meet the network (:data:`FloorForm`).
        passes: timed passes over all the data; the fastest counts (1: one pass, as a served run).
        warm_up: untimed calls of each batch shape first.

    Raises:
        ValueError: an unknown form, or passes < 1.
        ProfileError: ``form="batched"`` for a network whose ``max_batch_size`` cannot take the
            streams' windows at once (``"best"`` then measures ``"concurrent"`` only).
    """
    if form not in ("concurrent", "batched", "best"):
        raise ValueError(f"form must be 'concurrent', 'batched' or 'best', got {form!r}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    streams = [network_batches(target, d) for d in data]
    joinable = network.max_batch_size >= len(streams) * max(g.batch_size for g in target.groups)
    if form == "batched" and not joinable:
        raise ProfileError(
            f"--floor: the network takes at most {network.max_batch_size} windows per call (max_batch_size), "
            f"not the {len(streams)} streams' batches at once"
        )
    forms = (
        ["concurrent", "batched"]
        if form == "best" and joinable
        else [form if form == "batched" else "concurrent"]
    )
    if len(streams) == 1:
        forms = ["concurrent"]  # one stream: both forms are the same calls
    rates = []
    for each in forms:
        if each == "concurrent":
            runs = network.instances(len(streams))  # one sequence per instance: an instance per stream
            _concurrent_s(runs, [feeds[:1] * warm_up for feeds in streams], 1)
            seconds = _concurrent_s(runs, streams, passes)
        else:
            _batched_s(network, [feeds[:1] * warm_up for feeds in streams], 1)
            seconds = _batched_s(network, streams, passes)
        updates = sum(map(len, streams)) if each == "concurrent" else len(streams) * min(map(len, streams))
        rates.append(updates * target.update_size / sample_rate / seconds)
    return max(rates)
