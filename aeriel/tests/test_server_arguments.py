"""serve() refuses bad arguments before any process starts, naming the argument and the fix (issue 16)."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from hermes.aeriel import ServerPreflightError, serve


def _tritonservers() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if "tritonserver" in p.name()}


@pytest.fixture
def no_server_started():
    before = _tritonservers()
    yield
    assert _tritonservers() - before == set()


def test_a_string_for_models_is_refused_not_iterated(tmp_path: Path, no_server_started) -> None:
    with pytest.raises(
        TypeError, match=r"models must be a list of str values, got the string 'mlp'; write models=\['mlp'\]"
    ):
        serve(tmp_path, models="mlp")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_args": "--log-verbose=1"}, "server_args must be a list of str values, got the string"),
        (
            {"gpus": "0,1"},
            r"gpus must be a list of int values \(GPU indices such as \[0, 1\]\), 'none' or 'all'; got the string '0,1'",
        ),
        ({"gpus": [0, "1"]}, r"gpus must be a list of int values, got \[0, '1'\]"),
        ({"models": ["a", 3]}, r"models must be a list of str values, got \['a', 3\]"),
    ],
)
def test_other_lists_are_checked_too(tmp_path: Path, kwargs: dict, message: str, no_server_started) -> None:
    with pytest.raises(TypeError, match=message):
        serve(tmp_path, **kwargs)


@pytest.mark.parametrize("timeout_s", [-5, 0, float("nan"), float("inf")])
def test_a_bad_timeout_is_refused_before_a_server_starts(
    tmp_path: Path, timeout_s: float, no_server_started
) -> None:
    with pytest.raises(
        ValueError, match=rf"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}"
    ):
        serve(tmp_path, timeout_s=timeout_s)


def test_a_negative_exit_timeout_is_refused(tmp_path: Path, no_server_started) -> None:
    with pytest.raises(ValueError, match=r"exit_timeout_s must be a finite number of seconds >= 0, got -1"):
        serve(tmp_path, exit_timeout_s=-1)


@pytest.mark.parametrize("address", ["203.0.113.7", "8.8.8.8", "no-such-host.invalid"])
def test_an_address_of_another_machine_is_a_preflight_error_naming_the_choices(
    tmp_path: Path, address: str, no_server_started
) -> None:
    with pytest.raises(ServerPreflightError) as info:
        serve(tmp_path, address=address)
    message = str(info.value)
    assert f"address {address!r} cannot be bound on this machine" in message
    assert "'127.0.0.1' (the default, this machine only), '0.0.0.0' (every interface)" in message


def test_a_port_in_use_is_named_in_the_message(tmp_path: Path, no_server_started) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerPreflightError) as info:
            serve(tmp_path, grpc_port=port)
    assert str(info.value).startswith(f"grpc_port={port} is already in use on 127.0.0.1")
    assert "leave grpc_port out and a free one is picked" in str(info.value)


def test_monitor_refuses_a_string_for_models() -> None:
    from hermes.aeriel.monitor import Monitor

    with pytest.raises(
        TypeError,
        match=r"models must be a list of model names, got the string 'stream'; write models=\['stream'\]",
    ):
        Monitor(["127.0.0.1:8002"], models="stream")
