"""Swarms of Compute Engine VMs (google-cloud-compute) and SSH commands on them (asyncssh)."""

from hermes.cloudbreak.compute._specs import SWARM_LABEL, VMSpec, insert_requests
from hermes.cloudbreak.compute._ssh import CommandResult, run_on_hosts, run_on_hosts_async
from hermes.cloudbreak.compute._swarm import ComputeClients, Swarm, compute_clients, delete_swarm, list_swarm

__all__ = [
    "SWARM_LABEL",
    "CommandResult",
    "ComputeClients",
    "Swarm",
    "VMSpec",
    "compute_clients",
    "delete_swarm",
    "insert_requests",
    "list_swarm",
    "run_on_hosts",
    "run_on_hosts_async",
]
