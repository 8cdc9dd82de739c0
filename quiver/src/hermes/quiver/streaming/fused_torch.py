"""A whole streaming model as one torch module: snapshotters, the user's network, online averagers.

``forward(*updates, *snapshotter_states, *averager_states) -> (*outputs, *new_snapshotter_states,
*new_averager_states)``, traced into one TorchScript file by
:func:`~hermes.quiver.streaming.export_streaming_model`. The network may be a plain torch
module or a loaded TorchScript module (its scripted code is kept as a call).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hermes.quiver.streaming.online_averager import OnlineAverager
from hermes.quiver.streaming.snapshotter import Snapshotter
from hermes.quiver.streaming.specs import OnlineAveragerSpec, SnapshotterSpec

__all__ = ["FusedStreamingModule"]


class FusedStreamingModule(torch.nn.Module):
    """Snapshotters → ``network`` → online averagers, with the states passed in and out.

    Args:
        network: takes the windows positionally, returns a tensor or a tuple of tensors.
        groups: one snapshotter spec per update input.
        feeds: for each positional network argument, ``(group index, tensor index)``.
        averagers: one averager spec per output.
        positions: for each averager, the index of the network result it averages.
        batched: states carry a leading sequence axis ``n``; the network then sees
            ``(n·B, …)`` windows.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        groups: Sequence[SnapshotterSpec],
        feeds: Sequence[tuple[int, int]],
        averagers: Sequence[OnlineAveragerSpec],
        positions: Sequence[int],
        *,
        batched: bool,
    ) -> None:
        super().__init__()
        self.network = network
        self.snapshotters = torch.nn.ModuleList([Snapshotter(s, batched=batched) for s in groups])
        self.averagers = torch.nn.ModuleList([OnlineAverager(s, batched=batched) for s in averagers])
        self.feeds = [tuple(f) for f in feeds]
        self.positions = list(positions)
        self.batched = batched
        self._tails = [groups[g].output_shape(groups[g].tensors[t])[1:] for g, t in self.feeds]
        self._shapes = [tuple(s.input_shape) for s in averagers]

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cut windows from the updates, run the network once, average its predictions."""
        count = len(self.snapshotters)
        updates, snap_states, avg_states = args[:count], args[count : 2 * count], args[2 * count :]
        windows: list[tuple[torch.Tensor, ...]] = []
        new_snap: list[torch.Tensor] = []
        for snapshotter, update, state in zip(self.snapshotters, updates, snap_states, strict=True):
            *cut, new_state = snapshotter(update, state)
            windows.append(tuple(cut))
            new_snap.append(new_state)
        feeds = []
        for (group, tensor), tail in zip(self.feeds, self._tails, strict=True):
            window = windows[group][tensor]
            feeds.append(window.reshape(-1, *tail) if self.batched else window)
        result = self.network(*feeds)
        values = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        outputs: list[torch.Tensor] = []
        new_avg: list[torch.Tensor] = []
        for averager, position, shape, state in zip(
            self.averagers, self.positions, self._shapes, avg_states, strict=True
        ):
            predictions = values[position]
            if self.batched:
                predictions = predictions.reshape(-1, *shape)
            output, new_state = averager(predictions, state)
            outputs.append(output)
            new_avg.append(new_state)
        return (*outputs, *new_snap, *new_avg)
