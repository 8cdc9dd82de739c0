"""``hermes image pull``: pull and convert a container image ahead of time (cached)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from hermes.aeriel._cli import register

app = typer.Typer(help="Container images for the Apptainer runtime.", no_args_is_help=True)


@app.command("pull")
def pull(
    uri: str = typer.Argument(..., help="docker://... or oras://... image."),
    image_dir: Path | None = typer.Option(
        None,
        "--image-dir",
        help="Where the .sif goes (default: $HERMES_IMAGE_DIR, else ~/.cache/hermes/images).",
    ),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="Seconds the pull may take."),
    executable: str = typer.Option("apptainer", "--executable", help="apptainer or singularity."),
    force: bool = typer.Option(False, "--force", help="Pull again even when a copy exists."),
) -> None:
    """Pull URI once into the image cache, with progress, so that servers start from it at once."""
    from hermes.aeriel.exceptions import AerielError
    from hermes.aeriel.server.images import pull_image

    logging.getLogger("hermes.aeriel.server.images").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(message)s")
    try:
        path = pull_image(uri, image_dir=image_dir, executable=executable, timeout_s=timeout_s, force=force)
    except (AerielError, ValueError) as exc:
        typer.echo(f"hermes image pull: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))


register("image", app)
