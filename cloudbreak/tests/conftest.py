"""Fixtures of the cloudbreak tests: loopback fakes of GKE, Compute, Kubernetes and SSH."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cloudbreak_fakes.gke import FakeGKE, client_for, start_fake_gke

from hermes.cloudbreak import ClusterManager, RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.0, deadline_s=60.0)


@pytest.fixture
def fake_gke() -> Iterator[FakeGKE]:
    """A running gRPC fake of GKE on 127.0.0.1."""
    fake = FakeGKE()
    server = start_fake_gke(fake)
    try:
        yield fake
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture
def gke(fake_gke: FakeGKE) -> Iterator[ClusterManager]:
    """A ClusterManager talking to the fake over the production gRPC transport."""
    client, channel = client_for(fake_gke)
    try:
        yield ClusterManager(
            project="hermes-p1",
            location="us-central1-a",
            client=client,
            retry=FAST_RETRY,
            poll_interval_s=0.01,
            timeout_s=10.0,
        )
    finally:
        channel.close()


@pytest.fixture
def token_endpoint() -> Iterator[object]:
    """A fake OAuth token endpoint on 127.0.0.1 (credentials files point their token_uri at it)."""
    from cloudbreak_fakes.token import FakeTokenEndpoint, start_fake_token_endpoint

    fake = FakeTokenEndpoint()
    server = start_fake_token_endpoint(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def kube() -> Iterator[tuple[object, str]]:
    """kmock's Kubernetes emulator on 127.0.0.1: ``(emulator, url)``."""
    from cloudbreak_fakes.kube import kube_emulator

    with kube_emulator() as pair:
        yield pair


@pytest.fixture
def kube_tls(tmp_path: Path) -> Iterator[dict]:
    """kmock's Kubernetes emulator over HTTPS, as a GKE control plane: ``emu``, ``url``, ``ca_pem``, ``ca_file``."""
    import ssl

    from cloudbreak_fakes.kube import kube_emulator, self_signed_certificate

    pem, cert_file, key_file = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    with kube_emulator(tls=context) as (emu, url):
        yield {"emu": emu, "url": url, "ca_pem": pem, "ca_file": cert_file}


@pytest.fixture
def tls_controller(kube_tls: dict) -> Iterator[object]:
    """The fake controller of the HTTPS emulator."""
    from cloudbreak_fakes.kube import FakeController

    ctl = FakeController(kube_tls["url"], ca_file=kube_tls["ca_file"])
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.fixture
def kube_api(kube: tuple[object, str]) -> Iterator[object]:
    """A real ``kubernetes.client.ApiClient`` on the emulator."""
    from cloudbreak_fakes.kube import api_client_for

    api = api_client_for(kube[1])
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def controller(kube: tuple[object, str]) -> Iterator[object]:
    """A fake controller that marks Deployments ready and gives load balancers an IP."""
    from cloudbreak_fakes.kube import FakeController

    ctl = FakeController(kube[1])
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.fixture
def fake_compute() -> Iterator[object]:
    """A running REST fake of Compute Engine on 127.0.0.1."""
    from cloudbreak_fakes.compute import FakeCompute, start_fake_compute

    fake = FakeCompute()
    server = start_fake_compute(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def compute(fake_compute: object) -> object:
    """Real Compute clients (REST) on the fake, with anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials

    from hermes.cloudbreak.compute import compute_clients

    clients, _ = compute_clients(credentials=AnonymousCredentials(), api_endpoint=fake_compute.endpoint)  # type: ignore[attr-defined]
    return clients


@pytest.fixture
def ssh(tmp_path: Path) -> Iterator[dict]:
    """An SSH server on 127.0.0.1 that runs commands with subprocess."""
    from cloudbreak_fakes.ssh import ssh_server

    with ssh_server(tmp_path) as info:
        yield info


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Each test leaves no child process behind (subprocesses of the SIGTERM tests, SSH commands)."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    left = [
        p for p in me.children(recursive=True) if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert left == [], f"child processes left behind: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node Slurm cluster (slurmctld + slurmd + munged under a temp dir).

    Skips where Slurm cannot run (naming the command that installs it); in CI (``CI=true``)
    that skip is a failure, since ``make test`` installs it there.
    """
    from slurm_cluster import slurm_cluster, why_not_available

    reason = why_not_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Slurm tests must run in CI: {reason}")
        pytest.skip(reason)
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
