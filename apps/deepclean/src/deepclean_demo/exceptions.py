"""The demo's errors: one base, :class:`DemoError`."""

from __future__ import annotations

__all__ = ["DemoError", "TorchMissingError"]

TORCH_HINT = (
    "install torch the way your site needs it, e.g. the CPU build: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


class DemoError(RuntimeError):
    """The demo could not finish, or a served sample differs from the offline network."""


class TorchMissingError(DemoError):
    """torch is not installed: the demo trains and exports a torch network."""

    def __init__(self) -> None:
        super().__init__(f"the demo needs torch, which is not installed: {TORCH_HINT}")


def require_torch() -> None:
    """Raise :class:`TorchMissingError` (with the install hint) when torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise TorchMissingError() from exc
