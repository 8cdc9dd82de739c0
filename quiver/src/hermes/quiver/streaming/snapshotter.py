"""The snapshotter: a stateful torch module that turns stride updates into windows.

Shapes (see :class:`~hermes.quiver.streaming.SnapshotterSpec` for the names):

=========================  ==========================  ============================
tensor                     direct (one sequence)       batched (``n`` sequences)
=========================  ==========================  ============================
update (input)             ``(1, C, s·B)``             ``(n, C, s·B)``
state (input and output)   ``(1, C, K)``               ``(n, C, K)``
windows of tensor ``i``    ``(B, C_i, K)``/``(B, K)``  ``(n, B, C_i, K)``/``(n, B, K)``
=========================  ==========================  ============================
"""

from __future__ import annotations

import torch

from hermes.quiver.streaming.specs import SnapshotterSpec

__all__ = ["Snapshotter"]


class Snapshotter(torch.nn.Module):
    """Keep the newest ``K`` samples per channel and emit ``B`` windows per update.

    ``forward(update, state) -> (*windows, new_state)``: window ``j`` of an update ends
    ``(j + 1)·s`` samples after the end of the state, so the last window ends at the newest
    sample; ``new_state`` is the newest ``K`` samples.

    Args:
        spec: the validated group description.
        batched: whether the leading axis counts sequences (batched state) instead of being 1.
    """

    def __init__(self, spec: SnapshotterSpec, *, batched: bool = False):
        super().__init__()
        self.spec = spec
        self.batched = batched
        self.kernel_size = spec.kernel_size
        self.stride = spec.stride
        self.batch_size = spec.batch_size
        self._slices = [(s.start, s.stop) for s in spec.channel_slices]
        self._squeeze = [t.channels is None for t in spec.tensors]

    def forward(self, update: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append ``update`` to ``state`` and cut the windows.

        Args:
            update: ``(n, C, s·B)`` new samples (``n = 1`` unless batched).
            state: ``(n, C, K)`` the newest samples before this update.

        Returns:
            One windows tensor per downstream tensor, then the new state ``(n, C, K)``.
        """
        kernel, stride = self.kernel_size, self.stride
        x = torch.cat([state, update], dim=-1)  # (n, C, K + s·B)
        windows = torch.stack(
            [x[:, :, (j + 1) * stride : (j + 1) * stride + kernel] for j in range(self.batch_size)], dim=1
        )  # (n, B, C, K)
        outputs = []
        for (start, stop), squeeze in zip(self._slices, self._squeeze, strict=True):
            part = windows[:, :, start:stop]
            if squeeze:
                part = part[:, :, 0]
            if not self.batched:
                part = part[0]
            outputs.append(part)
        new_state = x[:, :, x.shape[-1] - kernel :]
        return (*outputs, new_state)
