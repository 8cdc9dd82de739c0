"""EndpointWatcher on the Kubernetes watch API: one list, then a watch; 410 Gone lists again; errors
reconnect with a growing wait; close() ends the open watch at once and leaves no thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cloudbreak_fakes.kube import api_client_for
from cloudbreak_fakes.kube_watch import FakeWatchAPI, start_fake_watch_api
from kubernetes import client

from hermes.cloudbreak import CloudConfigError
from hermes.cloudbreak.kubernetes import Endpoint, EndpointWatcher, read_endpoints


@pytest.fixture
def api() -> Iterator[FakeWatchAPI]:
    fake = FakeWatchAPI()
    server = start_fake_watch_api(fake)
    try:
        yield fake
    finally:
        fake.close()
        server.shutdown()
        server.server_close()


@pytest.fixture
def api_client(api: FakeWatchAPI) -> Iterator[client.ApiClient]:
    kube = api_client_for(f"http://127.0.0.1:{api.port}")
    try:
        yield kube
    finally:
        kube.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Changes:
    """Records every on_change call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []
        self.lock = threading.Lock()

    def __call__(self, added: list[Endpoint], removed: list[Endpoint]) -> None:
        with self.lock:
            self.calls.append(([e.name for e in added], [e.name for e in removed]))


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "watch-el"]


def test_changes_arrive_through_one_watch_not_by_polling(
    api: FakeWatchAPI, api_client: client.ApiClient, tmp_path: Path
) -> None:
    api.put("el", ["10.8.0.10"])
    api.put("other", ["10.9.0.1"])  # another Service's endpoints: never reported
    changes = Changes()
    path = tmp_path / "live.json"
    # interval_s is far longer than the test: a poller would not see the changes in time
    with EndpointWatcher(api_client, "el", on_change=changes, endpoints_file=path, interval_s=600) as watcher:
        wait_for(lambda: changes.calls == [(["el-pod-10"], [])])
        api.put("el", ["10.8.0.10", "10.8.0.11", "10.8.0.12"])
        wait_for(lambda: len(changes.calls) == 2)
        assert changes.calls[1] == (["el-pod-11", "el-pod-12"], [])
        assert [e.grpc for e in read_endpoints(path)] == [
            "10.8.0.10:8001",
            "10.8.0.11:8001",
            "10.8.0.12:8001",
        ]
        api.put("el", ["10.8.0.11"])
        wait_for(lambda: len(changes.calls) == 3)
        assert changes.calls[2] == ([], ["el-pod-10", "el-pod-12"])
        api.delete("el")
        wait_for(lambda: len(changes.calls) == 4)
        assert changes.calls[3] == ([], ["el-pod-11"])
        assert watcher.current == {}
    assert api.kinds() == ["list", "watch"]  # one list, then one watch carried every change
    listing, watching = (query for _, query in api.requests)
    assert listing == {"fieldSelector": "metadata.name=el"}
    assert watching["resourceVersion"] == "102" and watching["watch"] == "true"
    assert watching["timeoutSeconds"] == "300" and watching["allowWatchBookmarks"] == "true"
    assert watcher_threads() == []


def test_an_expired_watch_lists_again_and_catches_up(api: FakeWatchAPI, api_client: client.ApiClient) -> None:
    api.put("el", ["10.8.0.10"])
    changes = Changes()
    with EndpointWatcher(api_client, "el", on_change=changes, interval_s=0.01) as watcher:
        wait_for(lambda: changes.calls == [(["el-pod-10"], [])])
        api.put("el", ["10.8.0.10", "10.8.0.11"])
        wait_for(lambda: len(changes.calls) == 2)
        # the server compacts its history before streaming the next change: the open watch ends, the
        # watch from the last version seen gets 410 Gone, and only a new list shows the change
        api.put("el", ["10.8.0.11", "10.8.0.12"], streamed=False)
        wait_for(lambda: len(changes.calls) == 3)
        assert changes.calls[2] == (["el-pod-12"], ["el-pod-10"])
        wait_for(lambda: len(api.kinds()) == 5)
        assert watcher.resyncs == 1
    assert api.kinds() == ["list", "watch", "watch", "list", "watch"]
    assert api.requests[2][1]["resourceVersion"] == "102"  # the expired version
    assert api.requests[4][1]["resourceVersion"] == "103"  # from the new list
    assert sorted(watcher.current) == ["el-pod-11", "el-pod-12"]


def test_errors_reconnect_after_a_growing_wait(
    api: FakeWatchAPI, api_client: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hermes.cloudbreak.kubernetes")
    api.put("el", ["10.8.0.10"])
    api.failures = 3  # the API server answers 503 three times
    changes = Changes()
    with EndpointWatcher(api_client, "el", on_change=changes, interval_s=0.02, max_backoff_s=0.05):
        wait_for(lambda: changes.calls == [(["el-pod-10"], [])])
    assert api.kinds()[:4] == ["list", "list", "list", "list"]
    waits = [r.getMessage().rsplit("again in ", 1)[1] for r in caplog.records if "again in" in r.getMessage()]
    assert waits == ["0.02 s", "0.04 s", "0.05 s"]  # doubled, then capped at max_backoff_s
    assert "list Endpoints default/el: HTTP 503" in caplog.text


def test_close_ends_a_long_open_watch_at_once_and_leaves_no_thread(
    api: FakeWatchAPI, api_client: client.ApiClient
) -> None:
    api.put("el", ["10.8.0.10"])
    watcher = EndpointWatcher(api_client, "el", watch_timeout_s=3600).start()
    wait_for(lambda: api.kinds() == ["list", "watch"])
    wait_for(lambda: watcher._response is not None)
    watcher.close(timeout_s=15)  # the server would hold this watch for an hour
    assert watcher_threads() == []
    watcher.close()  # idempotent


def test_bad_settings_are_refused(api_client: client.ApiClient) -> None:
    with pytest.raises(CloudConfigError, match=r"EndpointWatcher.interval_s must be > 0, got 0"):
        EndpointWatcher(api_client, "el", interval_s=0)
    with pytest.raises(
        CloudConfigError, match=r"EndpointWatcher.watch_timeout_s must be >= 1 \(whole seconds\)"
    ):
        EndpointWatcher(api_client, "el", watch_timeout_s=0.5)
