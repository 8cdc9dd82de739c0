"""The online averager: a stateful torch module that averages overlapping predictions.

Shapes (see :class:`~hermes.quiver.streaming.OnlineAveragerSpec` for the names;
``L = (N - 1)·s``, or ``s`` when ``N = 1``):

=========================  ==========================  ============================
tensor                     direct (one sequence)       batched (``n`` sequences)
=========================  ==========================  ============================
predictions (input)        ``(B, [C,] K)``             ``(n, B, [C,] K)``
state (input and output)   ``(1, [C,] L)``             ``(n, [C,] L)``
output                     ``(1, [C,] s·B)``           ``(n, [C,] s·B)``
=========================  ==========================  ============================
"""

from __future__ import annotations

import torch

from hermes.quiver.streaming.specs import OnlineAveragerSpec

__all__ = ["OnlineAverager"]


class OnlineAverager(torch.nn.Module):
    """Average each output sample over the ``N`` newest predictions covering it.

    ``forward(predictions, state) -> (output, new_state)``. The state holds the partial
    sums of the ``N - 1`` stride blocks that newer predictions still cover; each update
    finishes ``B`` blocks (``s·B`` samples), ``(N - 1)·s`` samples behind the newest input.

    Args:
        spec: the validated averager description.
        batched: whether the leading axis counts sequences (batched state).
    """

    def __init__(self, spec: OnlineAveragerSpec, *, batched: bool = False):
        super().__init__()
        self.spec = spec
        self.batched = batched
        self.kernel_size = spec.kernel_size
        self.stride = spec.stride
        self.batch_size = spec.batch_size
        self.num_updates = spec.num_updates
        self.squeeze = spec.channels is None

    def forward(self, predictions: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new predictions to the pending sums and emit the finished blocks.

        Args:
            predictions: ``(n, B, [C,] K)`` when batched, else ``(B, [C,] K)``.
            state: ``(n, [C,] L)``, the pending partial sums (``n = 1`` unless batched).

        Returns:
            ``(n, [C,] s·B)`` averaged output and the new state ``(n, [C,] L)``.
        """
        kernel, stride, batch, num = self.kernel_size, self.stride, self.batch_size, self.num_updates
        preds = predictions if self.batched else predictions[None]
        if self.squeeze:
            preds = preds[:, :, None]
            state = state[:, None]
        span = num * stride
        tails = preds[..., kernel - span :]  # (n, B, C, N·s): blocks w-N+1 ... w of window w
        # Shift window j right by j·s and sum: pad every row by B·s, flatten, and re-cut the
        # rows one block·s shorter, which skews row j by j·s (the sum of anti-diagonals).
        channels = tails.shape[2]
        padded = torch.nn.functional.pad(tails, (0, batch * stride)).transpose(1, 2)  # (n, C, B, (N+B)s)
        flat = padded.reshape(-1, channels, batch * (num + batch) * stride)
        skewed = flat[..., : batch * (num + batch - 1) * stride].reshape(
            -1, channels, batch, (num + batch - 1) * stride
        )
        total = skewed.sum(dim=2)  # (n, C, (B + N - 1)·s): blocks u·B-N+1 ... u·B+B-1
        if num > 1:
            total = total + torch.nn.functional.pad(state, (0, batch * stride))
            new_state = total[..., batch * stride :]
        else:
            new_state = state * 0
        output = total[..., : batch * stride] / num
        if self.squeeze:
            output = output[:, 0]
            new_state = new_state[:, 0]
        return output, new_state
