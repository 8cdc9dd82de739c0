"""Swarms of Compute Engine VMs (google-cloud-compute) and SSH commands on them (asyncssh)."""

from hermes.cloudbreak.compute._specs import CPU_IMAGE, GPU_IMAGE, SWARM_LABEL, VMSpec, insert_requests
from hermes.cloudbreak.compute._ssh import CommandResult, known_hosts_for, run_on_hosts, run_on_hosts_async
from hermes.cloudbreak.compute._swarm import (
    ComputeClients,
    Swarm,
    compute_clients,
    delete_swarm,
    host_keys,
    list_swarm,
)

__all__ = [
    "CPU_IMAGE",
    "GPU_IMAGE",
    "SWARM_LABEL",
    "CommandResult",
    "ComputeClients",
    "Swarm",
    "VMSpec",
    "compute_clients",
    "delete_swarm",
    "host_keys",
    "insert_requests",
    "known_hosts_for",
    "list_swarm",
    "run_on_hosts",
    "run_on_hosts_async",
]
