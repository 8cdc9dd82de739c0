"""A stand-in for the ``apptainer``/``singularity`` command, for tests on machines without it.

Invoked through a small wrapper named ``apptainer`` (and ``singularity``) that tests put
first on PATH. It appends one JSON line per call to ``$FAKE_APPTAINER_LOG``: the name it
was invoked as, its argv and its APPTAINER*/SINGULARITY* environment. Then it behaves like
the real command as far as hermes uses it:

* ``--version`` prints a version;
* ``exec [--cleanenv] [--nv] [--bind SRC:DST[:ro]]... [--env K=V]... IMAGE tritonserver ARGS``
  fails like apptainer when the image does not exist; otherwise it runs the REAL bundled
  ``tritonserver`` (the nvidia-pytriton wheel, through hermes' local runtime pieces) with
  container paths mapped back through the binds and the container environment built as
  apptainer builds it (``--cleanenv``: only ``--env`` and ``APPTAINERENV_*``/``SINGULARITYENV_*``
  values, plus what the bundled server needs to run outside a container). SIGTERM and
  SIGINT are forwarded to the server, as apptainer's starter does; the exit status is the
  server's.

* ``pull DEST URI`` writes a small file at DEST after ``$FAKE_APPTAINER_PULL_SECONDS``
  (progress lines on stdout as apptainer prints them); a URI containing ``doesnotexist``
  fails with apptainer's manifest error, an existing DEST with its refusal to overwrite.
* ``--nv`` on a host without NVIDIA libraries prints apptainer's warning and goes on.

The child's PID and final environment are logged too, so tests can check what really
reached the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

VERSION = "apptainer version 1.5.3-fake"


def record(entry: dict) -> None:
    log = os.environ.get("FAKE_APPTAINER_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def parse_exec(args: list[str]) -> tuple[dict, str, list[str]]:
    options: dict = {"binds": [], "env": {}, "nv": False, "cleanenv": False}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        flag = args[i]
        if flag in ("--nv",):
            options["nv"] = True
        elif flag in ("--cleanenv", "-e"):
            options["cleanenv"] = True
        elif flag in ("--bind", "-B"):
            i += 1
            options["binds"].extend(args[i].split(","))
        elif flag == "--env":
            i += 1
            key, _, value = args[i].partition("=")
            options["env"][key] = value
        else:
            raise SystemExit(f"FATAL: fake apptainer does not know option {flag}")
        i += 1
    if i >= len(args):
        raise SystemExit("FATAL: exec needs an image and a command")
    return options, args[i], args[i + 1 :]


def to_host(arg: str, binds: list[str]) -> str:
    """Map a container path in ``arg`` (``/models/x`` or ``--flag=/models/x``) back through the binds."""
    flag, eq, value = arg.rpartition("=") if arg.startswith("-") else ("", "", arg)
    for bind in binds:
        parts = bind.split(":")
        src, dst = parts[0], parts[1] if len(parts) > 1 else parts[0]
        if value == dst or value.startswith(dst.rstrip("/") + "/"):
            return f"{flag}{eq}{src}{value[len(dst) :]}"
    return arg


def container_env(options: dict) -> dict[str, str]:
    env = {} if options["cleanenv"] else dict(os.environ)
    for prefix in ("SINGULARITYENV_", "APPTAINERENV_"):  # APPTAINERENV_ wins
        for key, value in os.environ.items():
            if key.startswith(prefix):
                env[key[len(prefix) :]] = value
    env.update(options["env"])
    return env


def run_pull(args: list[str]) -> int:
    """``apptainer pull [--force] DEST URI``; texts from apptainer 1.5 (internal/pkg/build, cmd/internal/cli/pull.go)."""
    force = "--force" in args or "-F" in args
    rest = [a for a in args if a not in ("--force", "-F")]
    if len(rest) != 2:
        print("FATAL:   the fake pull takes DEST URI", file=sys.stderr)
        return 255
    dest, uri = Path(rest[0]), rest[1]
    if dest.exists() and not force:
        print(f'FATAL:   Image file already exists: "{dest}" - will not overwrite', file=sys.stderr)
        return 255
    print("INFO:    Converting OCI blobs to SIF format", flush=True)
    if "doesnotexist" in uri:
        name = uri.removeprefix("docker://")
        print(
            f"FATAL:   While making image from oci registry: error fetching image to cache: failed to get "
            f"checksum for {uri}: reading manifest {name.rpartition(':')[2]} in {name.rpartition(':')[0]}: "
            "manifest unknown: manifest unknown",
            file=sys.stderr,
        )
        return 255
    seconds = float(os.environ.get("FAKE_APPTAINER_PULL_SECONDS", "0"))
    dest.write_bytes(b"SIF partial")
    time.sleep(seconds)
    dest.write_bytes(f"SIF fake image of {uri}".encode())
    print("INFO:    Creating SIF file...", flush=True)
    return 0


def run_exec(args: list[str]) -> int:
    from hermes.aeriel.server.local import LocalRuntime, find_triton_wheel

    options, image, command = parse_exec(args)
    if options["nv"] and not Path("/dev/nvidiactl").exists():
        print("WARNING: Could not find any nv files on this host!", file=sys.stderr)
    if not Path(image).exists():
        print(f"FATAL:   could not open image {image}: failed to retrieve path for {image}", file=sys.stderr)
        return 255
    if not command or command[0] != "tritonserver":
        print(f"FATAL: the fake image only holds tritonserver, asked for {command[:1]}", file=sys.stderr)
        return 255
    runtime = LocalRuntime()
    runtime.wheel = wheel = find_triton_wheel()
    backends = runtime._backend_directory()
    try:
        env = container_env(options)
        needed = runtime.server_env()
        for key in ("PATH", "LD_LIBRARY_PATH", "HOME"):
            env[key] = needed.get(key, "")
        argv = [str(wheel.binary), *(to_host(a, options["binds"]) for a in command[1:])]
        argv.append(f"--backend-directory={backends}")
        child = subprocess.Popen(argv, env=env)
        record({"child_pid": child.pid, "child_env": {k: env[k] for k in sorted(env)}})
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: child.send_signal(signum))
        return child.wait()
    finally:
        runtime.cleanup()


def main(name: str, args: list[str]) -> int:
    watched = ("APPTAINER", "SINGULARITY")
    record(
        {
            "name": name,
            "argv": args,
            "env": {k: v for k, v in os.environ.items() if k.startswith(watched)},
        }
    )
    if args[:1] == ["--version"]:
        print(VERSION.replace("apptainer", name))
        return 0
    if args[:1] == ["exec"]:
        return run_exec(args[1:])
    if args[:1] == ["pull"]:
        return run_pull(args[1:])
    print(f"FATAL: the fake {name} only implements --version, exec and pull, got {args[:1]}", file=sys.stderr)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
