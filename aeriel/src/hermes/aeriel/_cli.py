"""The ``hermes`` command line.

hermes-aeriel owns the console script. Every installed hermes subpackage adds its commands
through the entry-point group ``hermes.cli``: an entry point that names a
:class:`typer.Typer` becomes a command group (``hermes repo ...``), one that names a
function becomes a command (``hermes export``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Callable
from typing import Any

import typer

__all__ = ["app", "main", "register"]

app = typer.Typer(
    name="hermes",
    help="hermes: deep-learning inference-as-a-service on NVIDIA Triton for streaming timeseries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_registered: set[str] = set()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
) -> None:
    """hermes: export models, serve Triton, stream data through it."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def register(name: str, target: Any) -> None:
    """Add a command group (a :class:`typer.Typer`) or a command (a function) named ``name``."""
    if name in _registered:
        return
    _registered.add(name)
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name)
    elif callable(target):
        app.command(name=name)(target)
    else:  # pragma: no cover - a broken plugin
        raise TypeError(f"hermes.cli entry point {name!r} is neither a Typer app nor a function")


def _load_plugins(argv: list[str] | None = None) -> None:
    """Register aeriel's commands and every installed subpackage's (entry-point group ``hermes.cli``).

    When the command line names one plugin command (``hermes cloud ...``), only that plugin is
    imported: importing every subpackage (cloud SDKs, torch) would slow every command down.
    """
    from hermes.aeriel import _commands  # noqa: F401  (registers aeriel's own commands)
    from hermes.aeriel.control import _cli as _models_cli  # noqa: F401  (registers `hermes models`)
    from hermes.aeriel.monitor import _cli as _monitor_cli  # noqa: F401  (registers `hermes monitor`)
    from hermes.aeriel.profile import _cli as _profile_cli  # noqa: F401  (registers `hermes profile`)
    from hermes.aeriel.server import _image_cli  # noqa: F401  (registers `hermes image`)

    words = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")]
    if words and words[0] in _registered:  # one of aeriel's own commands: no plugin needed
        return
    entry_points = list(importlib.metadata.entry_points(group="hermes.cli"))
    wanted = {ep.name for ep in entry_points} & set(words[:1])
    for ep in entry_points:
        if wanted and ep.name not in wanted:
            continue
        try:
            target: Callable[..., Any] | typer.Typer = ep.load()
        except ImportError as exc:  # a subpackage whose optional dependency is missing
            logging.getLogger("hermes.cli").debug("skipping command %s: %s", ep.name, exc)
            continue
        register(ep.name, target)


def main() -> None:
    """Entry point of the ``hermes`` console script."""
    _load_plugins()
    app()
