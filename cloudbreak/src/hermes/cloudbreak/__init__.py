"""hermes.cloudbreak."""

from importlib.metadata import version as _version

__version__ = _version("hermes-cloudbreak")

__all__ = ["__version__"]
