"""PipelineProgress: an optional live table of per-stage counts, rates and source lag (rich).

```
 parent process
 └── "hermes-stillwater-progress" thread: every 1/refresh_hz s reads pipeline.stats()
     (shared-memory counters, no messages) and redraws a rich Live table; stopped and
     joined by close(), which draws the final counts once more.
```
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from hermes.stillwater.stats import StageStats

if TYPE_CHECKING:
    from hermes.stillwater.pipeline import Pipeline

__all__ = ["PipelineProgress"]


def _rich() -> Any:
    try:
        import rich.console
        import rich.live
        import rich.table
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('the progress display needs rich: pip install "hermes-stillwater[rich]"') from exc
    return rich


class PipelineProgress:
    """Draws a pipeline's per-stage counters while it runs.

    Args:
        pipeline: a running pipeline.
        console: a ``rich.console.Console`` to draw on (default: a new one on stderr).
        refresh_hz: redraws per second (> 0).
    """

    def __init__(self, pipeline: Pipeline, *, console: Any = None, refresh_hz: float = 4.0) -> None:
        if not refresh_hz > 0:
            raise ValueError(f"refresh_hz must be > 0, got {refresh_hz!r}")
        rich = _rich()
        self._pipeline = pipeline
        self.console = console if console is not None else rich.console.Console(stderr=True)
        self._period_s = 1.0 / refresh_hz
        self._t0 = time.monotonic()
        self._last: list[StageStats] = []
        self._live = rich.live.Live(self.render(), console=self.console, auto_refresh=False, transient=False)
        self._live.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hermes-stillwater-progress", daemon=True)
        self._thread.start()
        self._closed = False

    def render(self) -> Any:
        """The current table (a ``rich.table.Table``)."""
        rich = _rich()
        try:
            self._last = self._pipeline.stats()
        except Exception:  # closed meanwhile: keep the last counts
            pass
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        table = rich.table.Table(title=f"pipeline ({elapsed:.1f} s)")
        for column in ("stage", "in", "out", "out/s", "lag (ms)"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for s in self._last:
            table.add_row(
                s.name,
                str(s.items_in),
                str(s.items_out),
                f"{s.items_out / elapsed:.1f}",
                f"{s.lag_s * 1e3:.2f}",
            )
        return table

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self._live.update(self.render(), refresh=True)

    def close(self) -> None:
        """Stop redrawing, draw the final counts and join the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        self._live.update(self.render(), refresh=True)
        self._live.stop()
