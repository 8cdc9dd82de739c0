"""Errors raised by hermes.cloudbreak.

Every error derives from :class:`CloudbreakError`; subclasses also inherit the builtin they
refine, so ``except TimeoutError`` keeps working. Errors of google-api-core, grpc, kubernetes
and asyncssh are translated at one boundary (``raise ... from exc``) and never escape untranslated.

* CloudbreakError
  + CloudConfigError (also ValueError): a spec field has a bad value; the message names it
  + CloudApiError (also RuntimeError): a cloud or Kubernetes API call failed
    - ResourceNotFound (also LookupError): 404, the named object does not exist
    - ResourceExists: 409, the named object exists already
    - CapacityError: GPU stockout or quota exceeded, after the retry policy gave up
    - CloudUnavailable: the API could not be reached, timed out, or the credentials did not refresh
  + OperationFailed (also RuntimeError): a long-running operation ended with an error
  + OperationTimeout (also TimeoutError): an operation or a rollout did not finish in time
  + RemoteCommandError (also RuntimeError): SSH to a VM failed
  + TeardownError (also RuntimeError): some resources could not be deleted; lists them
  + SchedulerError (also RuntimeError): a batch scheduler (Slurm, HTCondor) refused or failed a command
    - JobFailed: a server job ended before its server was ready; quotes its log
"""

from __future__ import annotations


class CloudbreakError(Exception):
    """Base class of every error raised by hermes.cloudbreak."""


class CloudConfigError(CloudbreakError, ValueError):
    """A spec or an argument has a bad value; the message names the field, the value and what is expected."""


class CloudApiError(CloudbreakError, RuntimeError):
    """A cloud (GKE, Compute) or Kubernetes API call failed.

    Attributes:
        code: the HTTP status code of the failure, when there was one.
    """

    def __init__(self, message: str, *, code: int | None = None):
        super().__init__(message)
        self.code = code


class ResourceNotFound(CloudApiError, LookupError):
    """The named resource does not exist (HTTP 404)."""


class ResourceExists(CloudApiError):
    """The named resource exists already (HTTP 409)."""


class CapacityError(CloudApiError):
    """The cloud had no capacity for the request: a GPU/zone stockout or an exhausted quota.

    Raised once the retry policy has given up; nothing created by the failed attempts is left behind.

    Attributes:
        kind: ``"stockout"`` or ``"quota"``.
        attempts: how many attempts were made.
        resource: the quota that ran out (``"NVIDIA_T4_GPUS"``), when Google named it.
        zones_available: zones Google said have capacity (ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS).
        locations_tried: the zones or regions tried, when failing over between them.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        attempts: int = 1,
        code: int | None = None,
        resource: str | None = None,
        zones_available: tuple[str, ...] = (),
        locations_tried: tuple[str, ...] = (),
    ):
        super().__init__(message, code=code)
        self.kind = kind
        self.attempts = attempts
        self.resource = resource
        self.zones_available = tuple(zones_available)
        self.locations_tried = tuple(locations_tried)


class CloudUnavailable(CloudApiError):
    """The API could not be reached or kept failing: a 5xx, a timeout, an api-core ``RetryError``,
    a google-auth ``RefreshError`` or a transport error. Retrying later may succeed; teardown does.
    """


class OperationFailed(CloudbreakError, RuntimeError):
    """A long-running operation (GKE or Compute) finished with an error; the message quotes it."""


class OperationTimeout(CloudbreakError, TimeoutError):
    """An operation, a rollout or a load balancer did not finish before its deadline."""


class RemoteCommandError(CloudbreakError, RuntimeError):
    """Connecting to a VM over SSH, or running a command there, failed."""


class TeardownError(CloudbreakError, RuntimeError):
    """Some resources could not be deleted; ``leftovers`` names each one, so it can be removed by hand.

    Attributes:
        leftovers: a description of each resource still alive.
    """

    def __init__(self, message: str, *, leftovers: list[str]):
        super().__init__(message)
        self.leftovers = leftovers


class SchedulerError(CloudbreakError, RuntimeError):
    """A batch scheduler command (``sbatch``, ``squeue``, ``scancel``, HTCondor's schedd) failed."""


class JobFailed(SchedulerError):
    """A server job ended (failed, cancelled, timed out) before its server was ready.

    Attributes:
        job: the scheduler's id of the job.
        state: the state the scheduler reported.
    """

    def __init__(self, message: str, *, job: str, state: str):
        super().__init__(message)
        self.job = job
        self.state = state
