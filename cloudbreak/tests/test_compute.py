"""VM swarms against the loopback REST fake of Compute Engine and an SSH server on 127.0.0.1."""

from __future__ import annotations

import pytest
from cloudbreak_fakes.compute import FakeCompute

from hermes.cloudbreak import CapacityError, CloudConfigError, ResourceExists, RetryPolicy
from hermes.cloudbreak.compute import ComputeClients, Swarm, VMSpec, delete_swarm, list_swarm, run_on_hosts

FAST = RetryPolicy(attempts=3, backoff_s=0.0)
SPEC = VMSpec(
    name="clients",
    machine_type="n1-standard-4",
    accelerator_type="nvidia-tesla-t4",
    accelerator_count=1,
    startup_script="#!/bin/sh\necho booted",
    labels={"job": "o3"},
)


def swarm(clients: ComputeClients, count: int = 3, **kwargs: object) -> Swarm:
    return Swarm(
        SPEC,
        count,
        project="hermes-p1",
        zone="us-central1-a",
        clients=clients,
        retry=FAST,
        poll_interval_s=0.01,
        timeout_s=10,
        **kwargs,
    )  # type: ignore[arg-type]


def test_swarm_creates_vms_waits_running_and_deletes_on_exit(
    compute: ComputeClients, fake_compute: FakeCompute
) -> None:
    with swarm(compute) as vms:
        assert vms.addresses == {"clients-0": "127.0.0.1", "clients-1": "127.0.0.1", "clients-2": "127.0.0.1"}
        assert sorted(fake_compute.instances) == ["clients-0", "clients-1", "clients-2"]
    assert fake_compute.instances == {}
    body = fake_compute.requests[0][2]
    assert body["guestAccelerators"] == [
        {"acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
    ]
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert body["labels"] == {"job": "o3", "hermes-swarm": "clients", "managed-by": "hermes-cloudbreak"}
    assert {"key": "startup-script", "value": "#!/bin/sh\necho booted"} in body["metadata"]["items"]
    waits = [path for method, path, _ in fake_compute.requests if path.endswith("/wait")]
    assert len(waits) == 6  # every insert and every delete awaited on the fake's own endpoint


def test_swarm_deletes_every_vm_when_the_job_raises(
    compute: ComputeClients, fake_compute: FakeCompute
) -> None:
    with pytest.raises(ZeroDivisionError), swarm(compute, count=2):
        1 / 0  # noqa: B018
    assert fake_compute.instances == {}


def test_stockout_vms_are_retried_and_the_swarm_completes(
    compute: ComputeClients, fake_compute: FakeCompute
) -> None:
    fake_compute.stockouts = 2
    with swarm(compute, count=2) as vms:
        assert sorted(vms.addresses) == ["clients-0", "clients-1"]
    inserts = [p for m, p, _ in fake_compute.requests if m == "POST" and p.endswith("/instances")]
    assert len(inserts) == 4


def test_persistent_stockout_raises_capacity_error_and_leaves_nothing(
    compute: ComputeClients, fake_compute: FakeCompute
) -> None:
    fake_compute.stockouts = 100
    with (
        pytest.raises(
            CapacityError, match=r"ZONE_RESOURCE_POOL_EXHAUSTED.*does not have enough resources"
        ) as info,
        swarm(compute, count=2),
    ):
        pass
    assert (info.value.kind, info.value.attempts) == ("stockout", 3)
    assert info.value.zones_available == ("us-central1-a", "us-central1-f")  # from errorInfo.metadatas
    assert fake_compute.instances == {}


def test_quota_refusal_is_reported_as_quota(compute: ComputeClients, fake_compute: FakeCompute) -> None:
    fake_compute.quota_errors = 100
    with (
        pytest.raises(CapacityError, match="Quota 'NVIDIA_T4_GPUS' exceeded") as info,
        swarm(compute, count=1),
    ):
        pass
    assert (info.value.kind, info.value.code, info.value.resource) == ("quota", 403, "NVIDIA_T4_GPUS")


def test_existing_vm_raises_exists_and_is_not_deleted(
    compute: ComputeClients, fake_compute: FakeCompute
) -> None:
    with swarm(compute, count=1, keep=True):
        pass
    with pytest.raises(ResourceExists, match="clients-0' already exists") as info, swarm(compute, count=1):
        pass
    assert info.value.code == 409
    assert sorted(fake_compute.instances) == ["clients-0"]


def test_list_and_delete_swarm_by_label_across_pages(
    compute: ComputeClients, fake_compute: FakeCompute
) -> None:
    with swarm(compute, count=3, keep=True):
        pass
    assert list_swarm(compute, project="hermes-p1", zone="us-central1-a", name="clients") == {
        "clients-0": "127.0.0.1",
        "clients-1": "127.0.0.1",
        "clients-2": "127.0.0.1",
    }
    assert delete_swarm(
        compute, project="hermes-p1", zone="us-central1-a", name="clients", poll_interval_s=0.01
    ) == ["clients-0", "clients-1", "clients-2"]
    assert fake_compute.instances == {}


def test_run_collects_output_per_vm_over_ssh(
    compute: ComputeClients, ssh: dict, fake_compute: FakeCompute
) -> None:
    fake_compute.host_key, fake_compute.host_key_delay = ssh["host_key"], 2  # the agent publishes it late
    with swarm(compute, count=3, ssh_port=ssh["port"]) as vms:
        results = vms.run(
            "echo shard {shard} of $((1+2)); echo warn >&2; exit {code}",
            per_vm={"shard": [0, 1, 2], "code": [0, 0, 3]},
            username="hermes",
            client_keys=[ssh["client_key"]],
            concurrency=2,
        )
    assert {name: (r.exit_status, r.stdout, r.stderr) for name, r in results.items()} == {
        "clients-0": (0, "shard 0 of 3\n", "warn\n"),
        "clients-1": (0, "shard 1 of 3\n", "warn\n"),
        "clients-2": (3, "shard 2 of 3\n", "warn\n"),
    }
    assert [r.ok for r in results.values()] == [True, True, False]
    assert vms.host_keys == {f"clients-{i}": [ssh["host_key"]] for i in range(3)}


def test_a_host_key_that_does_not_match_the_guest_attributes_is_refused(
    compute: ComputeClients, ssh: dict, fake_compute: FakeCompute
) -> None:
    import asyncssh

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    fake_compute.host_key = " ".join(impostor.split()[:2])  # the VM published another key than it serves
    with swarm(compute, count=1, ssh_port=ssh["port"]) as vms:
        results = vms.run("echo hi", username="hermes", client_keys=[ssh["client_key"]], timeout_s=10)
        assert results["clients-0"].exit_status is None
        assert "HostKeyNotVerifiable" in results["clients-0"].stderr
        assert ssh["commands"] == []  # nothing ran on the impostor
        skipped = vms.run(
            "echo hi", username="hermes", client_keys=[ssh["client_key"]], check_host_keys=False, timeout_s=10
        )
        assert skipped["clients-0"].stdout == "hi\n"


def test_gpu_vms_default_to_an_image_with_the_nvidia_driver() -> None:
    from hermes.cloudbreak.compute import CPU_IMAGE, GPU_IMAGE

    gpu = VMSpec(name="g", accelerator_type="nvidia-tesla-t4", accelerator_count=1)
    assert gpu.image == GPU_IMAGE and VMSpec(name="c").image == CPU_IMAGE
    items = {i.key: i.value for i in gpu.instance("g-0", "us-central1-a").metadata.items}
    assert items == {"enable-guest-attributes": "TRUE", "install-nvidia-driver": "True"}


def test_run_reports_unreachable_hosts_per_vm(ssh: dict) -> None:
    results = run_on_hosts(
        {"up": "127.0.0.1", "down": "127.0.0.2"},
        "echo hi",
        port=ssh["port"],
        client_keys=[ssh["client_key"]],
        username="hermes",
        host_keys={"up": [ssh["host_key"]]},
        timeout_s=5,
    )
    assert (results["up"].exit_status, results["up"].stdout) == (0, "hi\n")
    assert results["down"].exit_status is None and "ConnectionRefusedError" in results["down"].stderr


def test_vm_spec_rejects_gpu_type_without_count() -> None:
    with pytest.raises(CloudConfigError, match="accelerator_type='nvidia-l4', accelerator_count=0"):
        VMSpec(name="x", accelerator_type="nvidia-l4")
