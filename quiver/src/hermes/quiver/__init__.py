"""hermes.quiver."""

from importlib.metadata import version as _version

__version__ = _version("hermes-quiver")

__all__ = ["__version__"]
