"""Run every benchmark of the project and print one markdown table of ratios.

Each ``benchmarks/bench_<topic>.py`` exposes ``run(quick: bool) -> list[dict]``; every row is
one figure measured side by side with its baseline in the same run (see README "Benchmarks").

    python benchmarks/run.py [--quick] [--only client,stillwater] [--output bench-output]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        mem = "unknown RAM"

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    return (
        f"{cpu}, {os.cpu_count()} cores, {mem}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, numpy {version('numpy')}, torch {version('torch')}, "
        f"onnxruntime {version('onnxruntime')}, tritonclient {version('tritonclient')}, "
        f"Triton 2.51 (nvidia-pytriton {version('nvidia-pytriton')})"
    )


def load(path: Path) -> Any:
    """Import ``benchmarks/<name>.py`` as the module ``<name>``.

    The benchmarks folder stays on ``sys.path`` so that processes the benchmark spawns
    (stillwater stages) can import the same module by name.
    """
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(path.stem)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 100000:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def verdict(row: dict[str, Any]) -> str:
    target = row.get("target")
    ratio = row.get("ratio")
    if not target or ratio is None:
        return ""
    text = str(target).strip()
    if text.startswith("value"):  # an absolute target on the value itself, e.g. "value <= 50 us"
        ratio = row.get("value")
        text = "".join(text.removeprefix("value").split()[:2])  # "value <= 50 us" -> "<=50"
    if ratio is None:
        return ""
    try:
        if text.startswith(">="):
            return "met" if ratio >= float(text[2:]) else "missed"
        if text.startswith("<="):
            return "met" if ratio <= float(text[2:]) else "missed"
    except ValueError:
        return ""
    return ""


def table(rows: list[dict[str, Any]]) -> str:
    head = "| benchmark | figure | value | unit | baseline (same run) | baseline value | ratio | target | |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                fmt(r.get(k))
                for k in (
                    "benchmark",
                    "figure",
                    "value",
                    "unit",
                    "baseline",
                    "baseline_value",
                    "ratio",
                    "target",
                )
            )
            + f" | {verdict(r)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (for smoke tests)")
    parser.add_argument("--only", default="", help="comma-separated topics (bench_<topic>.py)")
    parser.add_argument("--output", default="bench-output", help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    only = {t.strip() for t in args.only.split(",") if t.strip()}
    files = sorted(HERE.glob("bench_*.py"))
    if only:
        files = [f for f in files if f.stem.removeprefix("bench_") in only]
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.monotonic()
    for path in files:
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            rows += load(path).run(quick=args.quick)
        except Exception:  # one broken benchmark must not hide the others
            failures.append(f"{path.name}:\n{traceback.format_exc()}")
        print(f"  {path.name} took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    machine = machine_description()
    text = (
        f"# hermes benchmarks\n\nMachine: {machine}\n\n"
        f"Medians over repeats; every ratio is measured against its baseline in the same run "
        f"({time.monotonic() - started:.0f} s in all{', quick mode' if args.quick else ''}).\n\n{table(rows)}\n"
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2, default=str))
    print(text)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
