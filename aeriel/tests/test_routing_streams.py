"""Streams that survive: failover with exact state rebuild on three real local Triton servers.

The ensemble (``_stream_models``): two streaming groups (``strain`` 3 channels, ``aux`` 1)
→ a TorchScript network → two online averagers (``clean``, ``parts``), all with batched state
(one instance of each stateful member serves the twelve sequences). Every output is checked
against the offline reference over the whole stream.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import SequenceError, StreamOrderError
from hermes.aeriel.routing import Endpoint, ReplayPlan, RoutingClient, replay_plan
from hermes.aeriel.server import serve
from hermes.aeriel.testing import leftover_resources
from hermes.quiver import StreamInputRecord, StreamOutputRecord

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
    deepclean = dict([
        StreamInputRecord(
            name="witness", model="snapshotter", kernel_size=4096, stride=8, batch_size=1, channels=(21,),
            tensors=("deepclean.witness",), zero_state_updates=511, max_sequences=1,
        ).to_parameter(),
        StreamOutputRecord(
            name="noise", model="aggregator", stride=8, batch_size=1, num_updates=256, delay=2040,
            zero_state_updates=255, max_sequences=1,
        ).to_parameter(),
    ])  # fmt: skip
    plan = replay_plan(deepclean)
    assert plan is not None and plan.updates * 8 == 4096 + 255 * 8
    assert plan.tail_bytes({"witness": 21}) == 6136 * 21 * 4
    assert replay_plan({"other": "1"}) is None
    with pytest.raises(
        SequenceError, match=r"hermes.streaming_input.witness: stride=0; expected an integer >= 1"
    ):
        replay_plan(
            {
                **deepclean,
                "hermes.streaming_input.witness": json.dumps({"model": "s", "kernel_size": 8, "stride": 0}),
            }
        )
    assert ReplayPlan(updates=3).updates == 3


def wait_until(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_twelve_streams_survive_a_sigkill_and_a_sigterm_with_exact_outputs(tmp_path: Path) -> None:
    """Clients ``watching`` (readiness polls) and ``mapping`` (no polls: Triton's refusal) share the servers."""
    servers, net = start_three(tmp_path)
    try:
        with (
            RoutingClient(endpoints_of(servers), "stream", watch_interval_s=0.05) as watching,
            RoutingClient(endpoints_of(servers), "stream", watch_interval_s=None) as mapping,
        ):
            assert watching.replay is not None and watching.replay.updates == 5
            rng = np.random.default_rng(1)
            data = {
                sid: rng.standard_normal((4, sm.UPDATE * UPDATES)).astype(np.float32) for sid in range(1, 13)
            }
            owners = {sid: watching.owner(sid) for sid in data}
            assert set(owners.values()) == {"server-0", "server-1", "server-2"}, owners
            # alternate the ids of each server between the two clients
            by_owner = collections.defaultdict(list)
            for sid, owner in owners.items():
                by_owner[owner].append(sid)
            seqs = {
                sid: (watching if k % 2 == 0 else mapping).sequence(sid)
                for ids in by_owner.values()
                for k, sid in enumerate(ids)
            }
            watched = {sid for sid, seq in seqs.items() if seq._cluster is watching}
            futures: dict[int, list[Future]] = {sid: [] for sid in data}
            stopper = threading.Thread(target=servers[2].stop)
            for u in range(UPDATES):
                if u == 32:  # SIGTERM server-2: Triton drains (exit timeout 5 s) and refuses new requests
                    stopper.start()
                    assert wait_until(lambda: all(seqs[sid].endpoint != "server-2" for sid in watched)), (
                        "the readiness poll did not move the streams off the draining server"
                    )
                for sid, seq in seqs.items():
                    futures[sid].append(seq.send(sm.updates(data[sid])[u], end=u == UPDATES - 1))
                if u == 16:  # SIGKILL server-1 with updates in flight
                    servers[1].process.kill()
                if u % 4 == 3:
                    for fs in futures.values():
                        fs[-1].result(120)
            check_streams(futures, data, net)
            stopper.join(60)
            for sid, seq in seqs.items():
                reasons = {e.source.split()[0]: e.reason for e in seq.failovers}
                assert seq.endpoint == "server-0", reasons
                assert set(reasons) == {"server-1", "server-2"} & {owners[sid], *reasons}, reasons
                if owners[sid] == "server-2" and sid in watched:
                    assert reasons["server-2"] == "the server is not ready (draining)"
            assert watching.live_sequences == [] and mapping.live_sequences == []
    finally:
        stop_all(servers)


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory):
    """One server with ``net`` versions 1 (served) and 2, for the chunk, gap and swap tests."""
    root = tmp_path_factory.mktemp("one")
    nets = sm.build(root / "repo", versions=2)
    server = serve(root / "repo", models=["stream"], log_file=root / "server.log", exit_timeout_s=3)
    try:
        yield server, nets
    finally:
        stop_all([server])


def collect(blocks: list[Future]) -> dict[str, np.ndarray]:
    got = [b.result(60) for b in blocks]
    return {key: np.concatenate([b.outputs[key][0] for b in got], axis=-1) for key in ("clean", "parts")}


def test_chunks_of_random_lengths_give_the_fixed_update_output_and_aligned_positions(one) -> None:
    server, (net, _) = one
    rng = np.random.default_rng(2)
    total = sm.UPDATE * 30 + 3  # not a multiple of the update: the END pad is trimmed
    data = rng.standard_normal((4, total)).astype(np.float32)
    with RoutingClient(endpoints_of([server]), "stream", watch_interval_s=None) as client:
        stream = client.stream(5, position=1000)
        blocks, at = [], 0
        while at < total:
            n = int(rng.integers(1, 11))
            blocks += stream.push(
                {"strain": data[:3, at : at + n], "aux": data[3:, at : at + n]}, position=1000 + at
            )
            at += n
        blocks += stream.finish()
        got = collect(blocks)
        padded = np.concatenate([data, np.zeros((4, sm.UPDATE - 3), np.float32)], axis=1)
        expected = sm.reference(net, padded)
        np.testing.assert_allclose(got["clean"], expected["clean"][:total], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["parts"], expected["parts"][:, :total], rtol=1e-5, atol=1e-5)
        first = blocks[0].result()
        assert (first.position, dict(first.starts)) == (1000, {"clean": 996, "parts": 996})
        assert blocks[-1].result().outputs["clean"].shape[-1] == 3
        assert client.live_sequences == []


def test_order_errors_name_the_sequence_and_positions_before_sending(one) -> None:
    server, _ = one
    with RoutingClient(endpoints_of([server]), "stream", watch_interval_s=None) as client:
        stream = client.stream(6, position=0)
        chunk = {"strain": np.ones((3, 6), np.float32), "aux": np.ones((1, 6), np.float32)}
        assert len(stream.push(chunk, position=0)) == 1
        with pytest.raises(
            StreamOrderError,
            match=r"^sequence 6: the chunk of group 'strain' at position 3 overlaps samples already given "
            r"\(the group expects position 6\): duplicated or out of order$",
        ):
            stream.push(chunk, position=3)
        with pytest.raises(
            StreamOrderError,
            match=r"^sequence 6: the chunk at position 10 leaves a gap of 4 samples after position 6 "
            r"\(gap policy 'raise'; use gap='zero_fill' or 'restart'\)$",
        ):
            stream.push(chunk, position=10)
        assert stream.sequence.tail_updates == 1  # nothing was sent for the refused chunks
        for b in stream.push(chunk, position=6) + stream.finish():
            b.result(60)


def test_gaps_are_zero_filled_up_to_a_limit_or_restart_the_state(one) -> None:
    server, (net, _) = one
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 20)).astype(np.float32)
    b = rng.standard_normal((4, 20)).astype(np.float32)
    with RoutingClient(endpoints_of([server]), "stream", watch_interval_s=None) as client:
        # zero fill: the stream equals one with zeros in the gap, and the block after it says so
        fill = client.stream(7, gap="zero_fill", max_fill=8)
        blocks = fill.push({"strain": a[:3], "aux": a[3:]}, position=0)
        blocks += fill.push({"strain": b[:3], "aux": b[3:]}, position=28) + fill.finish()
        joined = np.concatenate([a, np.zeros((4, 8), np.float32), b], axis=1)
        np.testing.assert_allclose(
            collect(blocks)["clean"], sm.reference(net, joined)["clean"], rtol=1e-5, atol=1e-5
        )
        gapped = [blk.result() for blk in blocks if blk.result().gaps]
        assert [(g.gaps[0].expected, g.gaps[0].position, g.gaps[0].samples, g.filled) for g in gapped] == [
            (20, 28, 8, 4)
        ]
        over = client.stream(8, gap="zero_fill", max_fill=8)
        sent = over.push({"strain": a[:3], "aux": a[3:]}, position=0)
        with pytest.raises(
            StreamOrderError,
            match=r"^sequence 8: the gap of 9 samples from position 20 to 29 exceeds max_fill=8 "
            r"\(gap policy 'zero_fill'\)$",
        ):
            over.push({"strain": b[:3], "aux": b[3:]}, position=29)
        collect(sent + over.finish())
    with RoutingClient(endpoints_of([server]), "stream", watch_interval_s=None) as client:
        # restart: each segment is a fresh sequence, exactly its own offline reference
        restart = client.stream(9, gap="restart")
        first = restart.push({"strain": a[:3], "aux": a[3:]}, position=0)
        second = restart.push({"strain": b[:3], "aux": b[3:]}, position=100)
        second += restart.finish()
        np.testing.assert_allclose(
            collect(first + second[:1])["clean"], sm.reference(net, a)["clean"], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            collect(second[1:])["clean"], sm.reference(net, b)["clean"], rtol=1e-5, atol=1e-5
        )
        assert second[1].result().gaps[0].action == "restart"
        assert second[1].result().position == 100


def test_a_member_swap_during_streaming_rebuilds_every_stream_with_no_gap(one) -> None:
    server, (net1, net2) = one
    rng = np.random.default_rng(4)
    count = 40
    data = {sid: rng.standard_normal((4, sm.UPDATE * count)).astype(np.float32) for sid in (21, 22, 23)}
    with RoutingClient(endpoints_of([server]), "stream", watch_interval_s=None) as client:
        seqs = {sid: client.sequence(sid) for sid in data}
        futures: dict[int, list[Future]] = {sid: [] for sid in data}
        halfway = threading.Event()

        def feed() -> None:
            for u in range(count):
                for sid, seq in seqs.items():
                    futures[sid].append(seq.send(sm.updates(data[sid])[u], end=u == count - 1))
                if u == 10:
                    halfway.set()
                if u % 2:
                    for fs in futures.values():
                        fs[-1].result(120)

        feeder = threading.Thread(target=feed)
        feeder.start()
        halfway.wait(120)
        report = client.swap_member("net", 2)
        feeder.join(120)
        assert report.old_versions == (1,) and report.new_version == 2
        assert client.manager.ready_versions("net") == {"server-0": [2]}
        for sid, seq in seqs.items():
            (event,) = seq.failovers
            assert (event.reason, event.resent, event.replayed) == ("swap", 0, 5)
            k = event.first_update
            assert 10 < k < count
            results = [f.result(60) for f in futures[sid]]
            served = np.concatenate([r["clean"][0] for r in results], axis=-1)
            old, new = sm.reference(net1, data[sid])["clean"], sm.reference(net2, data[sid])["clean"]
            cut = k * sm.UPDATE
            np.testing.assert_allclose(served[:cut], old[:cut], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(served[cut:], new[cut:], rtol=1e-5, atol=1e-5)
            assert not np.allclose(old[cut:], new[cut:])
        client.manager.load("net", versions=[1])  # the module's other tests use version 1


def stream_with_a_move(server, net: sm.Net, sid: int, tail: int, move_at: int, wait: bool) -> np.ndarray:
    """Stream 24 updates, rebuilding from a ``tail``-update replay before update ``move_at``; the clean output."""
    data = np.random.default_rng(sid).standard_normal((4, sm.UPDATE * 24)).astype(np.float32)
    with RoutingClient(
        endpoints_of([server]), "stream", replay_updates=tail, watch_interval_s=None
    ) as client:
        seq = client.sequence(sid)
        futures = []
        for u, update in enumerate(sm.updates(data)):
            if u == move_at:
                if wait:
                    futures[-1].result(60)
                event = seq.rebuild("property test")
                assert event.replayed == min(move_at - event.resent, tail)
            futures.append(seq.send(update, end=u == 23))
            assert seq.tail_updates <= tail + u + 1
        served = np.concatenate([f.result(60)["clean"][0] for f in futures])
    return served - sm.reference(net, data)["clean"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(move_at=st.integers(1, 23), extra=st.integers(0, 4), wait=st.booleans())
def test_a_rebuild_at_any_point_with_any_tail_at_least_the_recorded_one_is_exact(
    one, move_at, extra, wait
) -> None:
    server, (net, _) = one
    error = stream_with_a_move(server, net, 100 + move_at, 5 + extra, move_at, wait)
    np.testing.assert_allclose(error, 0, atol=1e-5)


def test_a_tail_one_update_short_of_the_record_is_not_exact(one) -> None:
    server, (net, _) = one
    error = stream_with_a_move(server, net, 99, 4, 12, True)
    assert np.abs(error[: 12 * sm.UPDATE]).max() < 1e-5  # before the move: exact
    assert np.abs(error[12 * sm.UPDATE :]).max() > 1e-3  # after: the averager saw zeros


def test_times_in_seconds_and_the_drop_flush_policy(one) -> None:
    server, (net, _) = one
    rng = np.random.default_rng(5)
    data = rng.standard_normal((4, sm.UPDATE * 6 + 2)).astype(np.float32)
    rates = {"strain": 256.0, "aux": 256.0}
    t0 = 1_000_000_000.0  # a GPS-like start time
    with RoutingClient(endpoints_of([server]), "stream", watch_interval_s=None) as client:
        stream = client.stream(31, position=t0, sample_rates=rates, flush="drop")
        blocks = stream.push({"strain": data[:3, :10], "aux": data[3:, :10]}, position=t0)
        blocks += stream.push({"strain": data[:3, 10:], "aux": data[3:, 10:]}, position=t0 + 10 / 256)
        with pytest.raises(
            StreamOrderError,
            match=r"^sequence 31: the chunk at position 1000000001.1015625 leaves a gap of 256 samples after "
            r"position 1000000000.1015625 ",
        ):
            stream.push({"strain": data[:3, :4], "aux": data[3:, :4]}, position=t0 + 1 + 26 / 256)
        blocks += stream.finish()
        got = [b.result(60) for b in blocks]
        assert [len(b.outputs["clean"][0]) for b in got] == [4] * 6 + [0]  # the last 2 samples dropped
        served = np.concatenate([b.outputs["clean"][0] for b in got])
        np.testing.assert_allclose(served, sm.reference(net, data[:, :24])["clean"], rtol=1e-5, atol=1e-5)
        assert got[1].position == t0 + 4 / 256 and got[1].starts["clean"] == t0  # delay 4 samples
