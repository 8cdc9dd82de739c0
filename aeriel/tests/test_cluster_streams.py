"""Streams that survive: failover with exact state rebuild on three real local Triton servers.

The ensemble (``_stream_models``): two streaming groups (``strain`` 3 channels, ``aux`` 1)
→ a TorchScript network → two online averagers (``clean``, ``parts``), all with batched state
(one instance of each stateful member serves the twelve sequences). Every output is checked
against the offline reference over the whole stream.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel.cluster import ClusterClient, Endpoint, ReplayPlan, replay_plan
from hermes.aeriel.serve import serve
from hermes.aeriel.testing import leftover_resources

from . import _stream_models as sm

UPDATES = 48


def start_three(root: Path) -> tuple[list, sm.Net]:
    repo = root / "repo"
    (net,) = sm.build(repo)
    servers: list = [None] * 3
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            servers[i] = serve(repo, models=["stream"], log_file=root / f"server-{i}.log", exit_timeout_s=5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for s in servers:
            if s is not None:
                s.close()
        raise errors[0]
    return servers, net


def stop_all(servers: list) -> None:
    for s in servers:
        s.close()
    assert [item for s in servers for item in leftover_resources(s)] == []


def endpoints_of(servers: list) -> list[Endpoint]:
    return [Endpoint.from_server(s, name=f"server-{i}") for i, s in enumerate(servers)]


def check_streams(futures: dict[int, list[Future]], data: dict[int, np.ndarray], net: sm.Net) -> None:
    for sid, fs in futures.items():
        results = [f.result(120) for f in fs]
        expected = sm.reference(net, data[sid])
        for key in ("clean", "parts"):
            served = np.concatenate([r[key][0] for r in results], axis=-1)
            assert served.shape[-1] == data[sid].shape[-1]
            np.testing.assert_allclose(served, expected[key], rtol=1e-5, atol=1e-5, err_msg=f"{sid}/{key}")


def test_the_replay_plan_is_read_from_the_ensemble_records(tmp_path: Path) -> None:
    sm.build(tmp_path / "repo")
    import json

    from hermes.quiver import ModelRepository

    params = ModelRepository(tmp_path / "repo").models["stream"].config.parameters
    plan = replay_plan(params)
    assert plan is not None
    # ceil(K / (s*B)) = ceil(16 / 4) = 4 updates refill the snapshotters, ceil((N-1)/B) = 1 the averagers
    assert plan.updates == 5
    assert dict(plan.update_sizes) == {"strain": 4, "aux": 4}
    assert dict(plan.delays) == {"clean": 4, "parts": 4}
    assert plan.tail_bytes({"strain": 3, "aux": 1}) == 5 * 4 * 4 * 4
    # DeepClean: 21 channels, K = 4096, s = 8, B = 1, N = 256: K + (N - 1)s samples
    deepclean = {
        "hermes.streaming_input.witness": json.dumps({"kernel_size": 4096, "stride": 8, "batch_size": 1}),
        "hermes.streaming_output.noise": json.dumps({"num_updates": 256, "batch_size": 1, "delay": 2040}),
    }
    plan = replay_plan(deepclean)
    assert plan is not None and plan.updates * 8 == 4096 + 255 * 8
    assert plan.tail_bytes({"witness": 21}) == 6136 * 21 * 4
    assert replay_plan({"other": "1"}) is None
    assert ReplayPlan(updates=3).updates == 3


def test_twelve_streams_survive_a_sigkill_and_a_sigterm_with_exact_outputs(tmp_path: Path) -> None:
    servers, net = start_three(tmp_path)
    try:
        with ClusterClient(endpoints_of(servers), "stream", watch_interval_s=0.2) as client:
            assert client.replay is not None and client.replay.updates == 5
            rng = np.random.default_rng(1)
            data = {
                sid: rng.standard_normal((4, sm.UPDATE * UPDATES)).astype(np.float32) for sid in range(1, 13)
            }
            seqs = {sid: client.sequence(sid) for sid in data}
            owners = collections.Counter(s.endpoint for s in seqs.values())
            assert len(owners) == 3, owners
            futures: dict[int, list[Future]] = {sid: [] for sid in data}
            stopper = None
            for u in range(UPDATES):
                for sid, seq in seqs.items():
                    futures[sid].append(seq.infer(sm.updates(data[sid])[u], end=u == UPDATES - 1))
                if u == 16:  # SIGKILL server-1 with updates in flight
                    servers[1].process.kill()
                if u == 32:  # SIGTERM server-2 (drain), stop() waits for its exit
                    stopper = threading.Thread(target=servers[2].stop)
                    stopper.start()
                if u % 4 == 3:
                    for fs in futures.values():
                        fs[-1].result(120)
            check_streams(futures, data, net)
            assert stopper is not None
            stopper.join(60)
            moved = {sid: [(e.source, e.target, e.reason) for e in s.failovers] for sid, s in seqs.items()}
            for sid, seq in seqs.items():
                sources = {e.source.split()[0] for e in seq.failovers}
                assert seq.endpoint == "server-0", moved[sid]
                assert sources <= {"server-1", "server-2"}, moved[sid]
            assert sum(len(s.failovers) for s in seqs.values()) >= 12 - owners["server-0"]
            assert client.live_sequences == []
    finally:
        stop_all(servers)
