"""Loopback fakes of GKE, Compute Engine, Kubernetes and SSH for the cloudbreak tests (never shipped)."""
