"""Compare an exported artifact's outputs with the eager module's.

A comparison passes where every element satisfies ``|exported - eager| <= atol + rtol * |eager|``
(numpy's ``allclose`` rule); the report gives, per batch size and output, the largest absolute
and relative difference so a failure says how far off the export is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "OutputComparison", "VerificationReport", "compare_outputs"]

DEFAULT_ATOL = 1e-4
"""Default absolute tolerance of verified exports."""
DEFAULT_RTOL = 1e-3
"""Default relative tolerance of verified exports."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputComparison:
    """One output at one batch size.

    Attributes:
        batch_size: the batch size compared (``None`` for a model without a batch axis).
        output: the output name.
        max_abs: largest ``|exported - eager|``.
        max_rel: largest ``|exported - eager| / |eager|`` (elements where eager is 0 use 1e-12).
        passed: within tolerance (and shapes equal).
        note: why it failed beyond the numbers (shape or missing output), else "".
        inputs: which input set: ``"examples"``, ``"given N"`` (``verify_inputs``) or
            ``"draw N"`` (independent random draws).
    """

    batch_size: int | None
    output: str
    max_abs: float
    max_rel: float
    passed: bool
    note: str = ""
    inputs: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """The comparison of one export, returned by ``export_version`` and logged.

    Attributes:
        model: model name.
        platform: what was exported.
        atol / rtol: the tolerances used.
        comparisons: one per batch size and output.
    """

    model: str
    platform: str
    atol: float
    rtol: float
    comparisons: tuple[OutputComparison, ...]

    @property
    def passed(self) -> bool:
        """Every output at every batch size is within tolerance."""
        return all(c.passed for c in self.comparisons)

    @property
    def input_sets(self) -> list[str]:
        """The input sets compared, in order (``examples``, ``given N``, ``draw N``)."""
        return list(dict.fromkeys(c.inputs for c in self.comparisons))

    @property
    def max_abs(self) -> float:
        """The largest absolute difference over all outputs."""
        return max((c.max_abs for c in self.comparisons), default=0.0)

    @property
    def max_rel(self) -> float:
        """The largest relative difference over all outputs."""
        return max((c.max_rel for c in self.comparisons), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self) | {"passed": self.passed}

    def __str__(self) -> str:
        head = (
            f"verification of {self.model} ({self.platform}): {'PASSED' if self.passed else 'FAILED'} "
            f"(atol={self.atol:g}, rtol={self.rtol:g})"
        )
        rows = [
            f"  {'inputs':<18} {'batch':>5}  {'output':<20} {'max abs diff':>13} {'max rel diff':>13}  result"
        ]
        for c in self.comparisons:
            batch = "-" if c.batch_size is None else str(c.batch_size)
            result = "ok" if c.passed else "FAIL" + (f" ({c.note})" if c.note else "")
            rows.append(
                f"  {c.inputs or '-':<18} {batch:>5}  {c.output:<20} {c.max_abs:>13.3e} {c.max_rel:>13.3e}  {result}"
            )
        return "\n".join([head, *rows])


def compare_outputs(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    *,
    batch_size: int | None,
    atol: float,
    rtol: float,
    allow_non_finite: bool = False,
) -> list[OutputComparison]:
    """Compare each expected output with the actual one of the same name.

    NaN or infinite values fail the comparison (a module that returns NaN everywhere would
    otherwise "match" its export) unless ``allow_non_finite``; then they must sit at the same
    places in both.
    """
    return [
        _compare_one(
            name, want, actual, batch_size=batch_size, atol=atol, rtol=rtol, allow_non_finite=allow_non_finite
        )
        for name, want in expected.items()
    ]


def _compare_one(
    name: str,
    want: np.ndarray,
    actual: Mapping[str, np.ndarray],
    *,
    batch_size: int | None,
    atol: float,
    rtol: float,
    allow_non_finite: bool,
) -> OutputComparison:
    """One output: missing, of another shape, strings (equal or not), or numbers within tolerance."""
    failed = functools.partial(
        OutputComparison,
        batch_size=batch_size,
        output=name,
        max_abs=float("inf"),
        max_rel=float("inf"),
        passed=False,
    )
    if name not in actual:
        return failed(note=f"missing; the export returned {sorted(actual)}")
    got, want = np.asarray(actual[name]), np.asarray(want)
    if got.shape != want.shape:
        return failed(note=f"shape {got.shape} != eager {want.shape}")
    if want.dtype.kind in "OSU":
        same = bool(np.array_equal(got, want))
        return OutputComparison(
            batch_size=batch_size, output=name, max_abs=0.0 if same else float("inf"),
            max_rel=0.0 if same else float("inf"), passed=same,
        )  # fmt: skip
    g, w = got.astype(np.float64), want.astype(np.float64)
    diff = np.where(np.isnan(g) & np.isnan(w), 0.0, np.abs(g - w))  # NaN in both places: equal
    diff = np.where(np.isnan(diff), np.inf, diff)
    rel = diff / np.maximum(np.abs(w), 1e-12)
    passed = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(w))))
    note = ""
    eager_bad, export_bad = int(np.size(w) - np.isfinite(w).sum()), int(np.size(g) - np.isfinite(g).sum())
    if (eager_bad or export_bad) and not allow_non_finite:
        passed = False
        note = (
            f"non-finite (NaN/inf) values: {eager_bad} from the module, {export_bad} from the export; "
            "pass allow_non_finite=True if the model may return them"
        )
    return OutputComparison(
        batch_size=batch_size, output=name, max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0, passed=passed, note=note,
    )  # fmt: skip
