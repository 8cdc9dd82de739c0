"""Teardown on signals: a process killed with SIGTERM or SIGINT deletes its cluster before exiting."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from cloudbreak_fakes.gke import FakeGKE

from hermes.cloudbreak import ClusterManager, ClusterSpec, NodePoolSpec

SCRIPT = textwrap.dedent(
    """
    import sys, threading, grpc
    from google.cloud import container_v1
    from google.cloud.container_v1.services.cluster_manager.transports import ClusterManagerGrpcTransport
    from hermes.cloudbreak import ClusterManager, ClusterSpec, NodePoolSpec

    channel = grpc.insecure_channel(sys.argv[1])
    client = container_v1.ClusterManagerClient(transport=ClusterManagerGrpcTransport(channel=channel))
    gke = ClusterManager(project="hermes-p1", location="us-central1-a", client=client, poll_interval_s=0.01)
    spec = ClusterSpec(name="doomed", node_pools=(NodePoolSpec(name="cpu"),))
    with gke.cluster(spec):
        print("READY", flush=True)
        threading.Event().wait(60)
    print("UNREACHABLE", flush=True)
    """
)


@pytest.mark.parametrize(
    ("signum", "returncode"),
    [(signal.SIGTERM, 128 + 15), (signal.SIGINT, -signal.SIGINT), (signal.SIGHUP, 128 + 1)],
)
def test_signal_in_a_subprocess_deletes_its_cluster(fake_gke: FakeGKE, signum: int, returncode: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, f"127.0.0.1:{fake_gke.port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        assert [c.name for c in fake_gke.clusters.values()] == ["doomed"]
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == returncode, err
    assert "UNREACHABLE" not in out
    assert fake_gke.clusters == {}
    assert fake_gke.methods()[-2:] == ["DeleteCluster", "GetOperation"]


def test_signal_handlers_are_restored_after_the_context(gke: ClusterManager) -> None:
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = [signal.getsignal(s) for s in sigs]
    with gke.cluster(ClusterSpec(name="c", node_pools=(NodePoolSpec(name="cpu"),))):
        assert all(signal.getsignal(s) is not b for s, b in zip(sigs, before, strict=True))
    assert [signal.getsignal(s) for s in sigs] == before
