"""A sweep: streams x in-flight x instances, on a running server or on a local repository served per point."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hermes.aeriel.exceptions import ProfileError
from hermes.aeriel.profile._floor import floor_rate, load_network
from hermes.aeriel.profile._run import Measurement, make_data, run_streams
from hermes.aeriel.profile._target import StreamTarget, discover_target

__all__ = ["SweepConfig", "set_instances", "sweep"]

logger = logging.getLogger("hermes.aeriel.profile")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """What :func:`sweep` measures.

    Args:
        model: the streaming model (ensemble, fused or any stateful model).
        url: a running server's gRPC address; or None to serve ``repository`` locally.
        repository: a local model repository (needed for ``instances`` and ``floor``).
        streams: concurrent sequences, one sweep axis.
        in_flight: requests outstanding per stream, one sweep axis.
        instances: instance counts set on the model's stateful members and network (local
            repository only); None keeps the configs.
        updates: requests per stream.
        rate: multiple of real time per stream; None as fast as possible.
        sample_rate: samples per second of the data.
        floor: also run the network in-process on the same windows.
        seed: the data's seed.
    """

    model: str
    url: str | None = None
    repository: Path | None = None
    streams: Sequence[int] = (1,)
    in_flight: Sequence[int] = (1,)
    instances: Sequence[int | None] = (None,)
    updates: int = 200
    rate: float | None = None
    sample_rate: float = 4096.0
    floor: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.url is None and self.repository is None:
            raise ProfileError("give a server (--url) or a local model repository (--repository)")
        if any(i is not None for i in self.instances) and self.repository is None:
            raise ProfileError("--instances changes model configs: it needs a local --repository")
        if self.floor and self.repository is None:
            raise ProfileError("--floor loads the network from a local --repository")
        for what, values in (("streams", self.streams), ("in_flight", self.in_flight)):
            if not values or any(v < 1 for v in values):
                raise ProfileError(f"{what} must be positive integers, got {list(values)}")
        if self.updates < 2:
            raise ProfileError(f"updates must be >= 2 (a START and an END request), got {self.updates}")
        if self.rate is not None and self.rate <= 0:
            raise ProfileError(f"rate must be > 0 (a multiple of real time) or None, got {self.rate}")


def set_instances(repository: Path, target: StreamTarget, network: str | None, count: int) -> None:
    """Set ``instance_group[0].count`` of the target's members (and network) in a repository copy."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    for name in {*target.steps, *([network] if network else [])}:
        path = repository / name / "config.pbtxt"
        config = text_format.Parse(path.read_text(), pb.ModelConfig())
        if config.platform == "ensemble":
            continue
        if not config.instance_group:
            config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU)
        config.instance_group[0].count = count
        path.write_text(text_format.MessageToString(config))


@contextmanager
def _server(config: SweepConfig, instances: int | None) -> Iterator[tuple[str, list[int], StreamTarget]]:
    if config.url is not None:
        yield config.url, [], _served_target(config.url, config.model)
        return
    from hermes.aeriel.server import serve
    from hermes.aeriel.server._server import _session_members

    assert config.repository is not None
    with tempfile.TemporaryDirectory(prefix="hermes-profile-") as scratch:
        root = Path(scratch) / "repository"
        shutil.copytree(config.repository, root)
        if instances is not None:
            target = _target_from_files(root, config.model)
            set_instances(root, target, target.network, instances)
        with serve(root, models=[config.model], exit_timeout_s=10) as server:
            target = _served_target(server.grpc_url, config.model)
            pids = [server.pid, *_session_members(server.pid)] if server.pid else []
            yield server.grpc_url, pids, target


def _served_target(url: str, model: str) -> StreamTarget:
    """The target described from the configuration the server holds (through the control client)."""
    from google.protobuf import json_format

    from hermes.aeriel.control import ControlClient

    with ControlClient(url) as control:
        config = control.model_config(model)
    return discover_target(json_format.MessageToDict(config, preserving_proto_field_name=True))


def _target_from_files(root: Path, model: str) -> StreamTarget:
    """The target described from ``config.pbtxt`` files (no server)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as pb

    path = root / model / "config.pbtxt"
    if not path.is_file():
        raise ProfileError(f"no model {model!r} in {root}")
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    return discover_target(json_format.MessageToDict(config, preserving_proto_field_name=True))


def sweep(config: SweepConfig, progress: Callable[[Measurement], Any] | None = None) -> list[Measurement]:
    """Measure every (instances, streams, in flight) point of ``config``; servers are started per instance count."""
    results = []
    for instances in config.instances:
        with _server(config, instances) as (url, pids, target):
            network = None
            if config.floor and target.network and config.repository is not None:
                network = load_network(config.repository, target.network)
            if config.floor and network is None:
                raise ProfileError(f"--floor: cannot tell which network {config.model!r} runs")
            for streams in config.streams:
                data = make_data(target, streams, config.updates, seed=config.seed)
                floor = (
                    None
                    if network is None
                    else floor_rate(network, target, data, sample_rate=config.sample_rate)
                )
                for in_flight in config.in_flight:
                    logger.info("profiling %s: %d stream(s), %d in flight", config.model, streams, in_flight)
                    m = run_streams(
                        url, target, data, in_flight=in_flight, rate=config.rate, sample_rate=config.sample_rate,
                        server_pids=pids, instances=instances,
                    )  # fmt: skip
                    m = dataclasses.replace(m, floor_rate=floor)
                    results.append(m)
                    if progress is not None:
                        progress(m)
    return results
