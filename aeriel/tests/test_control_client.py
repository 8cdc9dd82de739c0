"""ControlClient against the real Triton: health, load/unload, index, statistics, warm-up, the admin token."""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from hermes.aeriel import InferenceClient, Monitor, serve
from hermes.aeriel._lifecycle import Deadline
from hermes.aeriel.control import ControlClient, ModelManager, RepositoryEntry
from hermes.aeriel.control._cli import models_app
from hermes.aeriel.control.client import channel_args
from hermes.aeriel.exceptions import (
    AccessDenied,
    ClientClosedError,
    ConnectionFailed,
    InputValidationError,
    ModelControlTimeout,
    ModelLoadError,
    ServerStartTimeout,
)
from hermes.aeriel.server._server import redacted, restricted_token
from hermes.aeriel.testing import SharedTriton, refusing_port

from ._reset_proxy import ResettingProxy
from .conftest import add_sub_config

# The real server's refusal of a restricted protocol (tritonserver of nvidia-pytriton 0.7.0, gRPC
# status UNAVAILABLE): the key given in --grpc-restricted-protocol, with Triton's header prefix.
REFUSAL = "This protocol is restricted, expecting header 'triton-grpc-protocol-hermes-admin-token'"

BROKEN_MODEL = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is corrupt")
"""


def add_sub_inputs() -> dict[str, np.ndarray]:
    return {"INPUT0": np.array([1.0, 2.0], np.float32), "INPUT1": np.array([0.5, 0.5], np.float32)}


def test_health_load_index_statistics_and_unload_on_the_real_server(
    shared_triton: SharedTriton, write_add_sub
):
    write_add_sub(shared_triton.repository, "ctl_add")
    with ControlClient(shared_triton.server.grpc_url) as control:
        assert control.is_live() and control.is_ready()
        assert not control.is_model_ready("ctl_add")
        assert RepositoryEntry("ctl_add", "", "", "") in control.repository_index()

        control.load("ctl_add")
        assert control.is_model_ready("ctl_add") and control.is_model_ready("ctl_add", 1)
        assert control.ready_versions("ctl_add") == [1]
        assert RepositoryEntry("ctl_add", "1", "READY", "") in control.repository_index()
        assert control.model_config("ctl_add").input[0].name == "INPUT0"

        control.warm("ctl_add", 1, add_sub_inputs())
        control.warm("ctl_add", 1, add_sub_inputs())
        # Triton counts a request once its response is released, just after the client has it
        counted = Deadline(10).poll(lambda: _count(control, "ctl_add", 2), interval_s=0.02)
        assert counted == 2
        means = control.mean_statistics("ctl_add")
        assert means["count"] == 2.0
        assert means["compute_infer_s"] > 0 and means["queue_s"] >= 0

        control.unload("ctl_add")
        assert control.ready_versions("ctl_add") == []
        assert RepositoryEntry("ctl_add", "1", "UNAVAILABLE", "unloaded") in control.repository_index()
    with pytest.raises(ClientClosedError, match="closed"):
        control.is_live()
    control.close()  # idempotent


def test_an_unload_held_by_an_open_stream_names_the_stream_and_finishes_once_it_closes(
    shared_triton: SharedTriton, write_add_sub
):
    # measured on the real server: a model stays UNLOADING while a gRPC stream that sent it a
    # request is open, however long; closing the stream lets the unload finish
    write_add_sub(shared_triton.repository, "ctl_held")
    with ControlClient(shared_triton.server.grpc_url) as control:
        control.load("ctl_held")
        client = InferenceClient(shared_triton.server.grpc_url, "ctl_held")
        try:
            client.infer(add_sub_inputs()).result(timeout=30)
            with pytest.raises(ModelControlTimeout, match=r"version 1 unloading; Triton finishes an unload only when "
                               r"every gRPC stream .*\(InferenceClient\.close\(\)\)"):  # fmt: skip
                control.unload("ctl_held", timeout_s=3)
        finally:
            client.close()
        control.unload("ctl_held", timeout_s=30)
        assert control.ready_versions("ctl_held") == []


def _count(control: ControlClient, model: str, expected: int) -> int | None:
    stats = control.statistics(model, 1)["model_stats"][0]
    return int(stats.get("inference_count", 0)) if int(stats.get("inference_count", 0)) >= expected else None


def test_versions_override_serves_exactly_those_and_refusals_quote_triton(
    shared_triton: SharedTriton, write_add_sub
):
    folder = write_add_sub(shared_triton.repository, "ctl_versions")
    (folder / "2").mkdir()
    (folder / "2" / "model.py").write_text((folder / "1" / "model.py").read_text())
    with ControlClient(shared_triton.server.grpc_url) as control:
        control.load("ctl_versions", versions=[1, 2])
        assert control.ready_versions("ctl_versions") == [1, 2]
        control.load("ctl_versions", versions=[2])
        assert control.ready_versions("ctl_versions") == [2]
        with pytest.raises(ValueError, match=r"versions must be positive integers, got \[0\]"):
            control.load("ctl_versions", versions=[0])
        with pytest.raises(ModelLoadError, match=r"'ctl_versions'.*version 7") as info:
            control.load("ctl_versions", versions=[2, 7])
        assert info.value.model == "ctl_versions"
        assert control.ready_versions("ctl_versions") == [2]  # the served version keeps serving

        broken = shared_triton.repository / "ctl_broken"
        (broken / "1").mkdir(parents=True)
        (broken / "config.pbtxt").write_text(add_sub_config("ctl_broken"))
        (broken / "1" / "model.py").write_text(BROKEN_MODEL)
        with pytest.raises(ModelLoadError, match="weights file is corrupt") as info:
            control.load("ctl_broken")
        assert info.value.model == "ctl_broken"
        assert "weights file is corrupt" in (control.unavailable_reason("ctl_broken") or "")
        with pytest.raises(InputValidationError, match="WRONG"):
            control.warm("ctl_versions", 2, {"WRONG": np.zeros(2, np.float32)})


def test_a_load_past_its_deadline_raises_its_own_timeout_not_a_start_timeout(
    shared_triton: SharedTriton, write_add_sub
):
    write_add_sub(shared_triton.repository, "ctl_slow")
    with ControlClient(shared_triton.server.grpc_url) as control:
        with pytest.raises(
            ModelControlTimeout, match=r"loading 'ctl_slow' on .* did not finish in time"
        ) as info:
            control.load("ctl_slow", timeout_s=0.001)
        assert isinstance(info.value, TimeoutError)
        assert not isinstance(info.value, ServerStartTimeout)
        control.load("ctl_slow")  # the server finished it in the background; this waits for it
        assert control.ready_versions("ctl_slow") == [1]


def test_close_ends_a_wait_in_another_thread(shared_triton: SharedTriton, write_add_sub):
    write_add_sub(shared_triton.repository, "ctl_wait")
    control = ControlClient(shared_triton.server.grpc_url)
    control.load("ctl_wait")
    errors: list[ClientClosedError] = []

    def wait_forever() -> None:  # version 1 stays ready while this waits for it to go
        try:
            control._wait_versions("ctl_wait", [], ["1"], Deadline(600), 600)
        except ClientClosedError as exc:
            errors.append(exc)

    waiting = threading.Thread(target=wait_forever)
    waiting.start()
    threading.Event().wait(0.3)  # let it poll a few times
    control.close()
    waiting.join(10)
    assert not waiting.is_alive()
    assert len(errors) == 1 and "closed" in str(errors[0])
    with ControlClient(shared_triton.server.grpc_url) as other:
        other.unload("ctl_wait")


def test_a_server_that_does_not_answer_is_connection_failed_naming_it():
    with refusing_port() as port, ControlClient(f"127.0.0.1:{port}", timeout_s=2) as control:
        with pytest.raises(
            ConnectionFailed, match=rf"server 127.0.0.1:{port} is unreachable \(liveness check\)"
        ):
            control.is_live()
        with pytest.raises(ConnectionFailed, match="Connection refused"):
            control.repository_index()


def test_a_read_whose_connection_is_reset_is_sent_again_and_a_load_is_not(
    shared_triton: SharedTriton, write_add_sub
):
    """A live server's connection reset mid-call (CI saw it on an unload's wait) costs one retry."""
    write_add_sub(shared_triton.repository, "ctl_reset")
    shared_triton.server.load_model("ctl_reset")
    with ResettingProxy(shared_triton.server.grpc_url) as proxy:
        # what the reset does to a call that is not retried: the CI failure's very words
        raw = grpcclient.InferenceServerClient(proxy.address, channel_args=channel_args(proxy.address))
        with raw:
            assert raw.is_server_live()
            proxy.reset_next_call()
            with pytest.raises(InferenceServerException, match="Connection reset by peer") as info:
                raw.get_model_repository_index()
            assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert proxy.resets == 1

        with ControlClient(proxy.address) as control:
            assert control.is_live()
            # (not is_ready: the shared server is not ready for good once any test's model failed)
            reads = (
                control.repository_index,
                lambda: control.is_model_ready("ctl_reset"),
                lambda: control.model_config("ctl_reset"),
            )
            for read in reads:
                proxy.reset_next_call()
                assert read()
            assert proxy.resets == 4 and proxy.connections == 5  # each reset answered on a new connection
            assert control.ready_versions("ctl_reset") == [1]

            proxy.reset_next_call()  # a model-control call is never sent twice
            with pytest.raises(
                ConnectionFailed, match=r"127\.0\.0\.1:\d+ is unreachable \(unloading 'ctl_reset'\)"
            ):
                control.unload("ctl_reset", timeout_s=5)
            assert proxy.resets == 5
            assert control.ready_versions("ctl_reset") == [1]  # the unload never reached the server


def test_server_stats_of_the_inference_client_come_from_the_control_client(
    shared_triton: SharedTriton, write_add_sub
):
    write_add_sub(shared_triton.repository, "ctl_stats")
    shared_triton.server.load_model("ctl_stats")
    with InferenceClient(shared_triton.server.grpc_url, "ctl_stats") as client:
        for _ in range(3):
            client.infer(add_sub_inputs()).result(timeout=30)
        stats = Deadline(10).poll(lambda: s if (s := client.server_stats())["count"] >= 3 else None)
    assert stats is not None and stats["count"] == 3.0
    assert stats["compute_infer_s"] > 0


# ---------------------------------------------------------------------- the restricted API


@pytest.fixture
def restricted(triton_repo: Path, write_add_sub, start_triton, caplog):
    """A real server whose health, model-repository and statistics protocols need a token."""
    token = secrets.token_hex(16)
    write_add_sub(triton_repo, "guarded")
    caplog.set_level(logging.DEBUG, logger="hermes.aeriel.server")
    arg = f"--grpc-restricted-protocol=health,model-repository,statistics:hermes-admin-token={token}"
    server = start_triton(triton_repo, models=[], server_args=[arg])
    return server, token


def test_the_restricted_api_refuses_without_the_token_and_serves_with_it(restricted, caplog):
    server, token = restricted
    # the Server's own control client carries the token of its arguments: ready and loading work
    server.load_model("guarded")
    started = "\n".join(r.getMessage() for r in caplog.get_records("setup"))
    assert token not in started and "hermes-admin-token=***" in started
    assert token not in server.read_log()

    for control in (ControlClient(server.grpc_url), ControlClient(server.grpc_url, admin_token="wrong")):
        with control:
            for call in (control.is_live, control.repository_index, lambda c=control: c.unload("guarded")):
                with pytest.raises(AccessDenied) as info:
                    call()
                assert REFUSAL in str(info.value)
                assert isinstance(info.value, PermissionError)
    assert server.control.ready_versions("guarded") == [1]  # the refused unload changed nothing

    with ControlClient(server.grpc_url, admin_token=token) as control:
        assert control.is_live()
        control.unload("guarded")
        assert control.ready_versions("guarded") == []
        control.load("guarded")
        assert control.ready_versions("guarded") == [1]
        assert token not in repr(control)


def test_manager_monitor_and_hermes_models_send_the_token(restricted):
    server, token = restricted
    server.load_model("guarded")
    with ModelManager([server.grpc_url], admin_token=token) as manager:
        manager.unload("guarded")
        manager.load("guarded", versions=[1])
        assert manager.ready_versions("guarded") == {server.grpc_url: [1]}

    for admin_token, up in ((None, False), (token, True)):
        with Monitor([server.grpc_url], source="statistics", admin_token=admin_token) as monitor:
            snapshot = monitor.read(monitor.endpoints[0])
        assert snapshot.up is up
        assert up or "This protocol is restricted" in (snapshot.error or "")

    runner = CliRunner()
    refused = runner.invoke(models_app, ["list", "--url", server.grpc_url, "--json"])
    assert refused.exit_code == 1
    assert f"server {server.grpc_url} refused reading the repository index" in refused.stderr
    assert REFUSAL in refused.stderr
    listed = runner.invoke(
        models_app, ["list", "--url", server.grpc_url, "--json"], env={"HERMES_ADMIN_TOKEN": token}
    )
    assert listed.exit_code == 0, listed.stderr
    assert '"state": "READY"' in listed.stdout


def test_restricted_token_and_redaction_read_both_spellings_of_the_flag():
    args = [
        "--grpc-restricted-protocol=model-repository,statistics:hermes-admin-token=s3cret",
        "--http-restricted-api",
        "model-repository:k=v4lue",
        "--log-verbose=1",
    ]
    assert restricted_token(args) == ("hermes-admin-token", "s3cret")
    assert restricted_token(["--grpc-restricted-protocol", "health:key=tok"]) == ("key", "tok")
    assert restricted_token(["--log-verbose=1"]) is None
    assert redacted(args) == [
        "--grpc-restricted-protocol=model-repository,statistics:hermes-admin-token=***",
        "--http-restricted-api",
        "model-repository:k=***",
        "--log-verbose=1",
    ]


def test_serve_refuses_grpc_off_before_starting_anything(tmp_path: Path):
    with pytest.raises(
        ValueError, match=r"--allow-grpc=false.*hermes checks and controls the server over gRPC"
    ):
        serve(tmp_path, server_args=["--allow-grpc=false"])


def test_clients_reach_a_loopback_server_past_an_http_proxy(
    shared_triton: SharedTriton, write_add_sub, monkeypatch: pytest.MonkeyPatch
):
    """grpcio routes channels through ``https_proxy`` when set (HPC nodes often set it); a proxy
    cannot reach this node's loopback, so clients of a loopback server go direct."""
    write_add_sub(shared_triton.repository, "ctl_proxy")
    dead_proxy = f"http://127.0.0.1:{refusing_port()}"
    for var in ("https_proxy", "http_proxy", "grpc_proxy"):
        monkeypatch.setenv(var, dead_proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with ControlClient(shared_triton.server.grpc_url) as control:
        control.load("ctl_proxy")
        with InferenceClient(shared_triton.server.grpc_url, "ctl_proxy") as client:
            result = client.infer(add_sub_inputs()).result(timeout=30)
        np.testing.assert_allclose(result.outputs["OUTPUT0"], [1.5, 2.5])
        control.unload("ctl_proxy")


def test_channel_args_are_tritonclients_defaults_and_go_direct_only_to_this_node():
    defaults = grpcclient.KeepAliveOptions()
    remote = dict(channel_args("gpu-node-0:8001"))
    assert remote == {
        "grpc.max_send_message_length": 2**31 - 1,
        "grpc.max_receive_message_length": 2**31 - 1,
        "grpc.keepalive_time_ms": defaults.keepalive_time_ms,
        "grpc.keepalive_timeout_ms": defaults.keepalive_timeout_ms,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.http2.max_pings_without_data": defaults.http2_max_pings_without_data,
    }  # a remote server: the proxy settings of the environment apply
    for local in ("127.0.0.1:8001", "localhost:8001", "[::1]:8001"):
        assert dict(channel_args(local)) == {**remote, "grpc.enable_http_proxy": 0}
    assert dict(channel_args("gpu-node-0:8001", direct=True))["grpc.enable_http_proxy"] == 0
    assert "grpc.enable_http_proxy" not in dict(channel_args("127.0.0.1:8001", direct=False))
