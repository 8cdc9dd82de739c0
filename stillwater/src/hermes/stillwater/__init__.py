"""hermes.stillwater."""

from importlib.metadata import version as _version

__version__ = _version("hermes-stillwater")

__all__ = ["__version__"]
