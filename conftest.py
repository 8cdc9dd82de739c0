"""Root pytest plugin: in CI, a skipped test is a failed test, unless it is marked ``gpu``.

A test module that starts with ``pytest.importorskip("torch")`` passes silently when torch is
missing; on a developer's machine that is a fair outcome, in CI it hides 54 tests. With
``CI=true`` (any of ``1``, ``true``, ``yes``) every skip, at collection or at run time, is
reported as a failure naming its reason, except for tests carrying the ``gpu`` marker (no GPU
here is expected). ``xfail`` is not a skip and is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

_GPU = "gpu"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, reason = longrepr
        return f"{reason} ({path}:{line})"
    return str(longrepr)


def _fail(report: pytest.CollectReport | pytest.TestReport, where: str) -> None:
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true: {where} was skipped ({reason}); only tests marked '{_GPU}' may skip in CI. "
        "Install what it needs (make venv) instead of letting it skip."
    )


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if _in_ci() and report.skipped and collector.get_closest_marker(_GPU) is None:
        _fail(report, f"collecting {collector.nodeid}")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    skipped = report.skipped and not hasattr(report, "wasxfail")
    if _in_ci() and skipped and item.get_closest_marker(_GPU) is None:
        _fail(report, item.nodeid)
    return report
