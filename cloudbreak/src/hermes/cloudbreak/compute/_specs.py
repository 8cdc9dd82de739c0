"""The description of the VMs of a swarm, and the exact ``compute_v1.Instance`` made from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.cloud import compute_v1

from hermes.cloudbreak._credentials import CLOUD_PLATFORM_SCOPE
from hermes.cloudbreak._names import MANAGED_BY, MANAGED_BY_LABEL, check_labels, check_name
from hermes.cloudbreak._validation import check_accelerator, check_count, check_project, check_zone
from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["CPU_IMAGE", "GPU_IMAGE", "SWARM_LABEL", "VMSpec", "insert_requests"]

SWARM_LABEL = "hermes-swarm"
#: The default boot image without GPUs.
CPU_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
#: The default boot image with GPUs: a Deep Learning VM image (CUDA 12.8) with the NVIDIA
#: driver; ``install-nvidia-driver=True`` metadata has it install the driver on first boot when
#: the image does not carry it already.
GPU_IMAGE = "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570"


@dataclass(frozen=True, kw_only=True)
class VMSpec:
    """One description for every VM of a swarm (``<name>-0`` … ``<name>-<N-1>``).

    Args:
        name: the swarm's name; also the value of the ``hermes-swarm`` label on each VM.
        machine_type: the machine type (``n1-standard-4``).
        accelerator_type: a GPU type (``nvidia-tesla-t4``); ``None`` for none.
        accelerator_count: GPUs per VM.
        image: the boot image or image family URL; ``None`` takes :data:`GPU_IMAGE` (NVIDIA driver)
            with GPUs, else :data:`CPU_IMAGE`.
        disk_size_gb: the boot disk, in GB.
        startup_script: a script run as root at boot (``startup-script`` metadata).
        labels: extra GCP labels.
        spot: use Spot VMs.
        network: the VPC network.
        external_ip: give each VM an ephemeral public IP (needed for SSH from outside GCP).
        ssh_user: the user whose public key is installed (``ssh-keys`` metadata).
        ssh_public_key: the OpenSSH public key line for ``ssh_user``.
        service_account: the VMs' service account email; ``None`` takes the project default.
    """

    name: str
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    image: str | None = None
    disk_size_gb: int = 50
    startup_script: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    spot: bool = False
    network: str = "global/networks/default"
    external_ip: bool = True
    ssh_user: str | None = None
    ssh_public_key: str | None = None
    service_account: str | None = None

    def __post_init__(self) -> None:
        check_name("VMSpec", "name", self.name, max_length=55)
        check_accelerator("VMSpec", self.accelerator_type)
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            raise CloudConfigError(
                "VMSpec.accelerator_type and accelerator_count go together (a GPU type and a count >= 1); "
                f"got accelerator_type={self.accelerator_type!r}, accelerator_count={self.accelerator_count}"
            )
        if self.disk_size_gb < 10:
            raise CloudConfigError(f"VMSpec.disk_size_gb must be >= 10, got {self.disk_size_gb}")
        if (self.ssh_user is None) != (self.ssh_public_key is None):
            raise CloudConfigError("VMSpec.ssh_user and ssh_public_key go together; set both or neither")
        check_labels("VMSpec", "labels", self.labels)
        if self.image is None:
            object.__setattr__(self, "image", GPU_IMAGE if self.accelerator_type else CPU_IMAGE)
        object.__setattr__(
            self,
            "labels",
            MappingProxyType({**self.labels, SWARM_LABEL: self.name, MANAGED_BY_LABEL: MANAGED_BY}),
        )

    def instance_names(self, count: int) -> list[str]:
        """The names of a swarm of ``count`` VMs."""
        return [f"{self.name}-{i}" for i in range(count)]

    def instance(self, name: str, zone: str) -> compute_v1.Instance:
        """The ``compute_v1.Instance`` resource for the VM ``name`` in ``zone``."""
        # the guest agent publishes the SSH host keys as guest attributes: they are checked on connect
        metadata = [compute_v1.Items(key="enable-guest-attributes", value="TRUE")]
        if self.accelerator_type and self.image == GPU_IMAGE:
            metadata.append(compute_v1.Items(key="install-nvidia-driver", value="True"))
        if self.startup_script:
            metadata.append(compute_v1.Items(key="startup-script", value=self.startup_script))
        if self.ssh_user and self.ssh_public_key:
            metadata.append(
                compute_v1.Items(key="ssh-keys", value=f"{self.ssh_user}:{self.ssh_public_key.strip()}")
            )
        interface = compute_v1.NetworkInterface(network=self.network)
        if self.external_ip:
            interface.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        scheduling = compute_v1.Scheduling()
        if self.accelerator_type:
            scheduling.on_host_maintenance = "TERMINATE"  # GPUs cannot live-migrate
        if self.spot:
            scheduling.provisioning_model = "SPOT"
            scheduling.instance_termination_action = "DELETE"
        else:
            scheduling.automatic_restart = True
        instance = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{self.machine_type}",
            labels=dict(self.labels),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=self.image, disk_size_gb=self.disk_size_gb
                    ),
                )
            ],
            network_interfaces=[interface],
            scheduling=scheduling,
            metadata=compute_v1.Metadata(items=metadata),
            service_accounts=[
                compute_v1.ServiceAccount(
                    email=self.service_account or "default", scopes=[CLOUD_PLATFORM_SCOPE]
                )
            ],
        )
        if self.accelerator_type:
            instance.guest_accelerators = [
                compute_v1.AcceleratorConfig(
                    accelerator_type=f"zones/{zone}/acceleratorTypes/{self.accelerator_type}",
                    accelerator_count=self.accelerator_count,
                )
            ]
        return instance


def insert_requests(
    spec: VMSpec, count: int, *, project: str, zone: str
) -> list[compute_v1.InsertInstanceRequest]:
    """The exact ``InsertInstanceRequest`` of each VM of a swarm of ``count``."""
    check_count("insert_requests", "count", count)
    check_project("insert_requests", project)
    check_zone("insert_requests", zone)
    return [
        compute_v1.InsertInstanceRequest(
            project=project, zone=zone, instance_resource=spec.instance(name, zone)
        )
        for name in spec.instance_names(count)
    ]
