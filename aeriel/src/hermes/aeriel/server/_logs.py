"""What a Triton log says about a failure: the lines that explain it, and the error to raise."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from hermes.aeriel.exceptions import ModelLoadError, PortInUseError, ServerExitedError
from hermes.aeriel.server.cpu_overlay import cpu_hint

__all__ = ["exit_error", "log_excerpt"]

# Messages a start without a GPU prints that are never the reason anything failed, matched
# exactly (shared/research/triton-cpu.md §2.1). Anything else is kept: on an HPC node
# "failed to load 'x' version 1: ... CUDA driver version is insufficient ..." IS the cause.
_HARMLESS = re.compile(
    "|".join(
        (
            r"Unable to allocate pinned system memory, pinned memory pool will not be available: "
            r"CUDA driver version is insufficient for CUDA runtime version",
            r"CudaDriverHelper has not been initialized\.",
            r"DCGM unable to start",
            r"unable to create stream for [^:]+: CUDA driver version is insufficient for CUDA runtime version",
            r"Failed to initialize NVML",
        )
    )
)
# Triton's texts: "Address already in use" (HTTP, gRPC), "Socket '<addr>:<port>' already in use" (metrics)
_PORT_IN_USE = re.compile(r"Address already in use|Socket '[^']*' already in use")
_FAILED_MODEL = re.compile(
    r"(?:failed to load|failed to poll model|Poll failed for model directory|unable to load model) '([^']+)'"
)


def _explains(line: str, names: list[str]) -> bool:
    is_error = line[:1] == "E" and line[1:5].isdigit()
    mentions = any(f"'{n}'" in line or f'"{n}"' in line for n in names)
    return (
        is_error
        or mentions
        or "failed to load" in line
        or line.startswith(("error:", "Error"))
        or bool(_PORT_IN_USE.search(line))
        or "UNAVAILABLE" in line
    )


def log_excerpt(text: str, *, models: Iterable[str] = (), limit: int = 20) -> str:
    """The lines of a Triton log that explain a failure: errors and anything naming a model."""
    names = [m for m in models if m and m != "*"]
    picked = [
        stripped
        for line in text.splitlines()
        if (stripped := line.strip()) and not _HARMLESS.search(stripped) and _explains(stripped, names)
    ]
    if not picked:
        picked = [ln.strip() for ln in text.splitlines() if ln.strip()][-limit:]
    return "\n".join(picked[-limit:])


def exit_error(
    text: str, *, code: int | None, models: Iterable[str], log_file: Path, what: str
) -> ServerExitedError | ModelLoadError:
    """The error that describes why a server process ended, from its log ``text``.

    Args:
        text: the server's log.
        code: its exit status (negative: the signal that killed it).
        models: the models it was asked to load (their lines are kept in the excerpt).
        log_file: where the log is (the message points there).
        what: the server as the message names it (``"tritonserver (local, grpc host:port)"``).
    """
    excerpt = log_excerpt(text, models=models)
    failed = _FAILED_MODEL.findall(text)
    if failed:
        names = ", ".join(dict.fromkeys(failed))
        return ModelLoadError(
            cpu_hint(
                f"model {names} failed to load, so tritonserver exited (status {code}); from {log_file}:\n{excerpt}"
            ),
            model=failed[0],
            reason=excerpt,
        )
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    in_use = re.search(rf"[^\n]*(?:{_PORT_IN_USE.pattern})[^\n]*", text)
    if in_use:  # the cause first, not as the 5th line of the quoted log
        how += (
            f": a port is already in use ({in_use.group(0).strip()}); pass free ports or leave "
            "http_port/grpc_port/metrics_port out"
        )
    error_type = PortInUseError if in_use else ServerExitedError
    return error_type(
        f"{what} exited ({how}); from {log_file}:\n{excerpt}", returncode=code, log_excerpt=excerpt
    )
