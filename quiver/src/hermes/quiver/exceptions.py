"""Errors raised by hermes.quiver.

Every error derives from :class:`QuiverError`; subclasses also inherit the builtin they
refine, so ``except ValueError`` keeps working.

* QuiverError
  + ModelConfigError (also ValueError): a config field has a wrong value; names the field
    - StreamingConfigError: a streaming model (snapshotter, online averager) cannot be built;
      names the tensor and the rule it breaks
    - StreamingRecordError: a streaming record in a model's ``parameters`` cannot be read
      (malformed, or written by a newer hermes); names the parameter
      . StreamingRecordVersionError: the record was written by a newer hermes
  + RepositoryError (also OSError): a repository or model folder cannot be read or written;
    names the file and the problem
    - ModelNotFoundError (also KeyError): no model of that name in the repository
    - ModelExistsError (also FileExistsError): ``add`` of a name that is taken
  + ExportError (also RuntimeError): an exporter failed; nothing was written
    - VerificationError: the exported artifact does not compute what the module computes;
      carries the :class:`~hermes.quiver.VerificationReport`
  + EnsembleError (also ValueError): a pipe, input or output of an ensemble is inconsistent
  + MissingDependencyError (also ImportError): an optional dependency is missing; names the
    extra to install
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hermes.quiver.verification import VerificationReport

__all__ = [
    "EnsembleError",
    "ExportError",
    "MissingDependencyError",
    "ModelConfigError",
    "ModelExistsError",
    "ModelNotFoundError",
    "QuiverError",
    "RepositoryError",
    "StreamingConfigError",
    "StreamingRecordError",
    "StreamingRecordVersionError",
    "VerificationError",
]


class QuiverError(Exception):
    """Base class of every error raised by hermes.quiver."""


class ModelConfigError(QuiverError, ValueError):
    """A model configuration field has a wrong value (the message names the field)."""


class StreamingConfigError(ModelConfigError):
    """A streaming model cannot be built from these tensors and numbers (names the tensor and rule)."""


class StreamingRecordError(ModelConfigError):
    """A streaming record (``hermes.streaming_input.*`` / ``hermes.streaming_output.*``) cannot be read."""


class StreamingRecordVersionError(StreamingRecordError):
    """A streaming record has a newer version than this hermes reads (upgrade hermes)."""


class RepositoryError(QuiverError, OSError):
    """A model repository (or a model folder in it) cannot be read or written."""


class ModelNotFoundError(RepositoryError, KeyError):
    """The repository holds no model of that name."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class ModelExistsError(RepositoryError, FileExistsError):
    """A model of that name already exists in the repository."""


class ExportError(QuiverError, RuntimeError):
    """Exporting a module failed; no version was written."""


class VerificationError(ExportError):
    """The exported artifact's outputs differ from the eager module's beyond tolerance.

    Attributes:
        report: the per-output comparison that failed.
    """

    def __init__(self, message: str, *, report: VerificationReport):
        super().__init__(message)
        self.report = report


class EnsembleError(QuiverError, ValueError):
    """An ensemble input, output or pipe is inconsistent (names the tensors involved)."""


class MissingDependencyError(QuiverError, ImportError):
    """An optional dependency is not installed (the message says which extra to install)."""
