"""The cluster client and model swaps against two and three real local Triton servers."""

from __future__ import annotations

import collections
import compileall
import contextlib
import os
import signal
import textwrap
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from hermes.aeriel import ClientClosedError, InputValidationError, ModelLoadError, SequenceError, ServerLost
from hermes.aeriel.control import ModelManager
from hermes.aeriel.routing import Endpoint, RoutingClient
from hermes.aeriel.server import serve
from hermes.aeriel.testing import leftover_resources, retry_while_port_in_use
from hermes.quiver import ModelConfig

# A stateful model: y = SCALE * (running sum of x over the sequence), and which server answered.
ACC_CONFIG = textwrap.dedent(
    """\
    name: "acc"
    backend: "python"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [
      { name: "y" data_type: TYPE_FP32 dims: [ 4 ] },
      { name: "server" data_type: TYPE_FP32 dims: [ 1 ] }
    ]
    sequence_batching {
      max_sequence_idle_microseconds: 60000000
      oldest { max_candidate_sequences: 256 }
    }
    instance_group [ { kind: KIND_CPU count: 1 } ]
    version_policy { specific { versions: [ 1 ] } }
    """
)
ACC_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils

    SCALE = {scale}
    SERVER = {server}


    class TritonPythonModel:
        def initialize(self, args):
            self.sums = {{}}

        def execute(self, requests):
            out = []
            for r in requests:
                cid, flags = r.correlation_id(), r.flags()
                x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
                if flags & 1:
                    self.sums[cid] = np.zeros_like(x)
                if cid not in self.sums:
                    out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"no state for {{cid}}")))
                    continue
                self.sums[cid] = self.sums[cid] + x
                y = (SCALE * self.sums[cid]).astype(np.float32)
                if flags & 2:
                    del self.sums[cid]
                where = np.full((x.shape[0], 1), SERVER, np.float32)
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y), pb_utils.Tensor("server", where)]))
            return out
    """
)
# A stateless model: y = x + 1, and which server answered.
WHERE_CONFIG = textwrap.dedent(
    """\
    name: "where"
    backend: "python"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [
      { name: "y" data_type: TYPE_FP32 dims: [ 4 ] },
      { name: "server" data_type: TYPE_FP32 dims: [ 1 ] }
    ]
    instance_group [ { kind: KIND_CPU count: 1 } ]
    """
)
WHERE_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils

    SERVER = {server}


    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
                where = np.full((x.shape[0], 1), SERVER, np.float32)
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x + 1), pb_utils.Tensor("server", where)]))
            return out
    """
)
ONES = np.ones((1, 4), np.float32)


def write_repo(root: Path, server: int, versions: tuple[int, ...] = (1,)) -> Path:
    """A repository with ``acc`` (versions ``versions``, SCALE = version) and ``where``, for server ``server``."""
    repo = root / f"repo-{server}"
    (repo / "acc").mkdir(parents=True)
    (repo / "acc" / "config.pbtxt").write_text(ACC_CONFIG)
    for v in versions:
        (repo / "acc" / str(v)).mkdir()
        (repo / "acc" / str(v) / "model.py").write_text(ACC_MODEL.format(scale=v, server=server))
    (repo / "where" / "1").mkdir(parents=True)
    (repo / "where" / "config.pbtxt").write_text(WHERE_CONFIG)
    (repo / "where" / "1" / "model.py").write_text(WHERE_MODEL.format(server=server))
    # Compile now: the python backend would otherwise write __pycache__ into a version folder
    # when it first loads it, and Triton would take that folder as changed and re-create the
    # version (dropping its sequences) on the next load of the model.
    compileall.compile_dir(str(repo), quiet=1)
    return repo


def start_servers(tmp_path: Path, start_triton, count: int, versions: tuple[int, ...] = (1,)) -> list:
    return [start_triton(write_repo(tmp_path, i, versions), models=["acc", "where"]) for i in range(count)]


@contextlib.contextmanager
def server_group(root: Path, count: int, versions: tuple[int, ...] = (1,)):
    """``count`` servers shared by several tests; stopped together, then checked for leftovers."""
    servers = []
    try:
        for i in range(count):
            repo = write_repo(root, i, versions)
            servers.append(
                serve(repo, models=["acc", "where"], log_file=root / f"server-{i}.log", exit_timeout_s=1)
            )
        yield servers
    finally:
        stoppers = [threading.Thread(target=s.close) for s in servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        assert [item for s in servers for item in leftover_resources(s)] == []


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """Three servers for the tests that do not change them."""
    with server_group(tmp_path_factory.mktemp("trio"), 3) as servers:
        yield servers


@pytest.fixture(scope="module")
def swap_pair(tmp_path_factory):
    """Two servers with versions 1 and 2 of ``acc`` (version 1 loaded) for the swap tests."""
    with server_group(tmp_path_factory.mktemp("swap"), 2, versions=(1, 2)) as servers:
        yield servers


def endpoints_of(servers: list) -> list[Endpoint]:
    return [Endpoint.from_server(s, name=f"server-{i}") for i, s in enumerate(servers)]


def test_sequences_are_pinned_by_hashing_and_spread_within_20_percent_over_three_servers(trio):
    endpoints = endpoints_of(trio)
    with RoutingClient(endpoints, "acc") as client:
        owners = {i: client.owner(i) for i in range(1, 1001)}
        spread = collections.Counter(owners.values())
        assert set(spread) == {"server-0", "server-1", "server-2"}
        assert all(abs(n - 1000 / 3) <= 0.2 * 1000 / 3 for n in spread.values()), spread

        # 1,000 real sequences of two steps each (at most max_in_flight / 2 live at once,
        # as the window bounds what is unanswered): the state stays on the owner
        first: dict[int, Future] = {}
        second: dict[int, Future] = {}
        for i in range(1, 1001):
            seq = client.sequence(i)
            first[i] = seq.send({"x": ONES * i})
            second[i] = seq.send({"x": ONES}, end=True)
        for i in range(1, 1001):
            out1, out2 = first[i].result(60), second[i].result(60)
            owner = int(owners[i].removeprefix("server-"))
            assert out1["server"][0, 0] == out2["server"][0, 0] == owner
            np.testing.assert_array_equal(out2["y"], ONES * (i + 1))
        assert dict(client.sequences_per_endpoint) == dict(spread)
        assert client.live_sequences == []

    # another client, given the servers in another order, pins every id to the same server
    with RoutingClient(list(reversed(endpoints)), "acc") as again:
        assert {i: again.owner(i) for i in range(1, 1001)} == owners


def test_stateless_requests_spread_evenly_and_inputs_are_checked(trio):
    with RoutingClient(endpoints_of(trio), "where") as client:
        futures = [client.infer({"x": ONES * k}) for k in range(90)]
        answers = [f.result(60) for f in futures]
        for k, out in enumerate(answers):
            np.testing.assert_array_equal(out["y"], ONES * k + 1)
        assert collections.Counter(int(out["server"][0, 0]) for out in answers) == {0: 30, 1: 30, 2: 30}
        assert dict(client.requests_per_endpoint) == {"server-0": 30, "server-1": 30, "server-2": 30}
        # checked before anything is sent, by the single-server client
        with pytest.raises(InputValidationError, match="unknown input 'y'"):
            client.infer({"y": ONES})
        with pytest.raises(InputValidationError, match=r"input 'x' has dtype float64, expected float32"):
            client.infer({"x": np.ones((1, 4))})
        assert sum(client.requests_per_endpoint.values()) == 90  # refused before sending: not counted


def test_a_killed_servers_sequences_fail_and_new_work_goes_elsewhere(tmp_path, start_triton):
    servers = start_servers(tmp_path, start_triton, 2)
    with (
        RoutingClient(endpoints_of(servers), "acc") as client,
        RoutingClient(endpoints_of(servers), "where") as where,
    ):
        seqs = {i: client.sequence(i) for i in range(1, 21)}
        for seq in seqs.values():
            np.testing.assert_array_equal(seq.send({"x": ONES}).result(60)["y"], ONES)
        victim = servers[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait(30)

        on_victim = [i for i, s in seqs.items() if s.endpoint == "server-1"]
        elsewhere = [i for i, s in seqs.items() if s.endpoint != "server-1"]
        assert on_victim and elsewhere
        # the first request to the dead server fails with ServerLost ...
        with pytest.raises(ServerLost, match="server-1"):
            seqs[on_victim[0]].send({"x": ONES}).result(60)
        # ... and every other sequence pinned there fails at once, without a request
        for i in on_victim[1:]:
            with pytest.raises(ServerLost, match=f"sequence {i} is lost"):
                seqs[i].send({"x": ONES})
        # sequences on the live servers carry on with their state
        for i in elsewhere:
            np.testing.assert_array_equal(seqs[i].send({"x": ONES}, end=True).result(60)["y"], ONES * 2)
        assert client.live_endpoints == ["server-0"]

        # new sequences whose ids hashed to the dead server go to the next server on the ring
        for i in on_victim:
            seq = client.sequence(i)
            assert seq.endpoint == "server-0"
            out = seq.send({"x": ONES * 3}, end=True).result(60)
            assert out["server"][0, 0] == int(seq.endpoint.removeprefix("server-"))
            np.testing.assert_array_equal(out["y"], ONES * 3)

        # stateless requests skip the dead server, even before they learn it is dead
        answers = [where.infer({"x": ONES}).result(60) for _ in range(12)]
        assert {int(a["server"][0, 0]) for a in answers} == {0}
        assert where.live_endpoints == ["server-0"]

        # the server comes back on the same ports: probe() reconnects, its ids return to it
        spec = victim.spec
        retry_while_port_in_use(
            lambda: start_triton(
                Path(spec.repository),
                models=["acc", "where"],
                http_port=spec.http_port,
                grpc_port=spec.grpc_port,
                metrics_port=spec.metrics_port,
            )
        )
        assert client.probe() == ["server-0", "server-1"]
        back = client.sequence(on_victim[0])  # an id the ring gives to server-1
        assert back.endpoint == "server-1"
        out = back.send({"x": ONES}, end=True).result(60)
        assert out["server"][0, 0] == 1


def test_a_sequence_refuses_requests_after_its_end_and_duplicate_ids(trio):
    with RoutingClient(endpoints_of(trio), "acc") as client:
        seq = client.sequence("run-7")
        with pytest.raises(SequenceError, match="run-7 is already live"):
            client.sequence("run-7")
        np.testing.assert_array_equal(seq.send({"x": ONES * 2}, end=True).result(60)["y"], ONES * 2)
        with pytest.raises(SequenceError, match="already ended"):
            seq.send({"x": ONES})
        again = client.sequence("run-7")  # the id is free again once the sequence ended
        np.testing.assert_array_equal(again.send({"x": ONES}, end=True).result(60)["y"], ONES)


class LiveStream(threading.Thread):
    """Keeps ``width`` sequences of ``length`` steps running until stopped; records every output."""

    def __init__(self, client: RoutingClient, width: int = 6, length: int = 8):
        super().__init__(name="live-stream", daemon=True)
        self.client, self.width, self.length = client, width, length
        self.outputs: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        self.versions: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.started_sequences = threading.Semaphore(0)
        self.requests = 0

    def run(self) -> None:
        next_id = 1
        active = []
        try:
            while not self.stop.is_set() or active:
                while len(active) < self.width and not self.stop.is_set():
                    seq = self.client.sequence(next_id)
                    self.versions[next_id] = seq.model_version
                    active.append(seq)
                    next_id += 1
                    self.started_sequences.release()
                futures = []
                for seq in active:
                    last = len(self.outputs[seq.sequence_id]) == self.length - 1
                    futures.append((seq, seq.send({"x": ONES}, end=last)))
                for seq, future in futures:
                    self.outputs[seq.sequence_id].append(future.result(60)["y"])
                    self.requests += 1
                active = [s for s in active if len(self.outputs[s.sequence_id]) < self.length]
        except BaseException as exc:
            self.errors.append(exc)


def test_hot_swap_under_a_live_stream_drops_nothing_and_never_mixes_versions(swap_pair):
    endpoints = endpoints_of(swap_pair)
    with RoutingClient(endpoints, "acc") as client:
        assert client.model_version == 1
        stream = LiveStream(client)
        stream.start()
        try:
            for _ in range(12):  # two generations of sequences under way before the swap
                assert stream.started_sequences.acquire(timeout=60)

            # a version that does not exist: refused, nothing switched, the stream carries on
            with pytest.raises(ModelLoadError, match="acc"):
                client.swap(3)
            assert client.model_version == 1
            before = max(stream.versions)

            report = client.swap(2, warmup={"x": ONES}, drain_timeout_s=60)
            after = max(stream.versions)
            while max(stream.versions) < after + 12:  # two generations started after the swap
                assert stream.started_sequences.acquire(timeout=60)
        finally:
            stream.stop.set()
            stream.join(120)
        assert stream.errors == []
        assert not stream.is_alive()

    # every sequence saw one version from start to end: y = version * step
    for sid, ys in stream.outputs.items():
        version = stream.versions[sid]
        assert len(ys) == stream.length
        for step, y in enumerate(ys, start=1):
            np.testing.assert_array_equal(y, ONES * version * step, err_msg=f"sequence {sid}")
    assert {stream.versions[s] for s in range(1, before + 1)} == {1}
    assert {stream.versions[s] for s in range(after + 1, max(stream.versions) + 1)} == {2}
    # the switch happened once: every sequence started before it is on 1, every one after on 2
    order = [stream.versions[s] for s in sorted(stream.versions)]
    assert order == sorted(order)
    assert report.old_versions == (1,) and report.new_version == 2 and report.abandoned == 0
    assert report.total_s >= report.load_s + report.drain_s + report.retire_s > 0
    with ModelManager(endpoints) as manager:
        assert manager.ready_versions("acc") == {"server-0": [2], "server-1": [2]}
    print(
        f"\nswap 1 -> 2 on 2 servers under {stream.width} live sequences: total {report.total_s:.3f} s "
        f"(load {report.load_s:.3f}, warm-up {report.warmup_s:.3f}, drain {report.drain_s:.3f}, "
        f"retire {report.retire_s:.3f}); {stream.requests} requests, 0 failed"
    )


def test_a_sequence_outliving_the_drain_timeout_fails_clearly(swap_pair):
    with RoutingClient(endpoints_of(swap_pair), "acc") as client:
        old = client.model_version
        new = 3 - old  # swap between versions 1 and 2, whichever is loaded now
        slow = client.sequence(99)
        np.testing.assert_array_equal(slow.send({"x": ONES}).result(60)["y"], ONES * old)
        report = client.swap(new, drain_timeout_s=0.2)
        assert report.abandoned == 1
        assert report.old_versions == (old,) and report.new_version == new
        with pytest.raises(SequenceError, match=r"99 did not end within the 0\.2 s drain"):
            slow.send({"x": ONES})
        fresh = client.sequence(100)
        assert fresh.model_version == new
        np.testing.assert_array_equal(fresh.send({"x": ONES}, end=True).result(60)["y"], ONES * new)
        assert client.manager.ready_versions("acc") == {"server-0": [new], "server-1": [new]}


def test_model_manager_loads_and_unloads_versions_on_every_server(swap_pair):
    with ModelManager(endpoints_of(swap_pair)) as manager:
        manager.unload("where")
        assert manager.ready_versions("where") == {"server-0": [], "server-1": []}
        manager.load("where")
        assert manager.ready_versions("where") == {"server-0": [1], "server-1": [1]}
        current = manager.ready_versions("acc")["server-0"]
        manager.load("acc", versions=[1, 2])
        assert manager.ready_versions("acc") == {"server-0": [1, 2], "server-1": [1, 2]}
        manager.load("acc", versions=current)
        assert manager.ready_versions("acc") == {"server-0": current, "server-1": current}
        served = manager.config("acc")
        assert served.name == "acc" and served.HasField("sequence_batching")
        # an override given as quiver's ModelConfig or Triton's JSON form: both become the protobuf
        override = ModelConfig(name="acc", platform=served.backend or served.platform, proto=served)
        manager.load("acc", versions=[2], config=override)
        assert manager.ready_versions("acc") == {"server-0": [2], "server-1": [2]}
        manager.load("acc", versions=current, config=json_format.MessageToDict(served))
        assert manager.ready_versions("acc") == {"server-0": current, "server-1": current}
        with pytest.raises(ValueError, match=r"versions must be positive integers, got \[0\]"):
            manager.load("acc", versions=[0])
        with pytest.raises(ModelLoadError, match="'ghost'"):
            manager.load("ghost")
    with pytest.raises(ClientClosedError, match="closed"):
        manager.ready_versions("acc")


def test_membership_follows_servers_added_and_removed_at_runtime(trio):
    """A server added later takes new sequences; a leaving server is drained before it goes."""
    endpoints = endpoints_of(trio)
    with RoutingClient(endpoints[:2], "acc") as client:
        client.add_endpoint(endpoints[2])
        client.add_endpoint(endpoints[2])  # already a member: no-op
        assert client.live_endpoints == ["server-0", "server-1", "server-2"]
        mine = [i for i in range(1, 200) if client.owner(i) == "server-2"]
        assert len(mine) > 20  # about a third of new ids now hash to the new server
        seq = client.sequence(mine[0])
        out = seq.send({"x": ONES}).result(60)
        assert out["server"][0, 0] == 2

        # removing server-2: no new sequence goes there, the live one may finish during the drain
        leaving = threading.Thread(
            target=client.remove_endpoint, args=("server-2",), kwargs={"drain_timeout_s": 30}
        )
        leaving.start()
        deadline = threading.Event()
        while "server-2" in client.live_endpoints and not deadline.wait(0.01):
            pass
        assert client.owner(mine[0]) != "server-2"
        last = seq.send({"x": ONES}, end=True).result(60)
        np.testing.assert_array_equal(last["y"], ONES * 2)  # the state survived the drain
        leaving.join(30)
        assert not leaving.is_alive()
        assert [ep.name for ep in client.endpoints] == ["server-0", "server-1"]

        # a sequence that outlives the drain is cut with ServerLost
        client.add_endpoint(endpoints[2])
        stuck = client.sequence(mine[1])
        stuck.send({"x": ONES}).result(60)
        assert client.remove_endpoint("server-2", drain_timeout_s=0.1) == 1
        with pytest.raises(ServerLost, match=r"left the cluster after a 0\.1 s drain"):
            stuck.send({"x": ONES})


def test_failover_is_off_for_a_model_without_streaming_records_unless_a_tail_is_given(trio):
    endpoints = endpoints_of(trio)
    with RoutingClient(endpoints, "acc") as client:
        plain = client.sequence(5001)
        assert client.replay is None and plain.replay_updates is None
        plain.send({"x": ONES}, end=True).result(60)
    with pytest.raises(
        SequenceError,
        match=r"model 'acc' records no streaming state \(no hermes.streaming_\* parameters\), so the replay tail "
        r"that rebuilds its state is unknown; give replay_updates= or failover=False",
    ):
        RoutingClient(endpoints, "acc", failover=True)
    with RoutingClient(endpoints, "acc", replay_updates=3) as client:
        seq = client.sequence(5003)
        for _ in range(5):
            seq.send({"x": ONES}).result(60)
        assert seq.tail_updates == 3  # bounded: the answered updates beyond the tail are dropped
        event = seq.rebuild()
        assert (event.replayed, event.resent) == (3, 0)
        # the running sum restarts from the 3 replayed updates: why failover is off by default here
        np.testing.assert_array_equal(seq.send({"x": ONES}, end=True).result(60)["y"], ONES * 4)
