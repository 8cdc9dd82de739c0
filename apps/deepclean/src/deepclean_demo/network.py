"""A DeepClean-shaped noise-regression network: 1-D convolutions, 21 witnesses in, one noise channel out."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from deepclean_demo.data import WITNESS_CHANNELS, Stream

__all__ = ["DeepCleanNet", "train"]

logger = logging.getLogger("deepclean_demo")


class DeepCleanNet(nn.Module):
    """(B, 21, K) witness windows -> (B, K) estimated noise.

    A small convolutional encoder/decoder in the spirit of DeepClean, sized for a CPU.
    """

    def __init__(self, channels: int = WITNESS_CHANNELS, hidden: int = 8, kernel: int = 9):
        super().__init__()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv1d(channels, hidden, kernel, padding=pad),
            nn.Tanh(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.Tanh(),
            nn.Conv1d(hidden, 1, kernel, padding=pad),
        )

    def forward(self, witness: torch.Tensor) -> torch.Tensor:
        return self.net(witness)[:, 0]


def train(
    net: DeepCleanNet, stream: Stream, *, steps: int, window: int, batch: int = 8, seed: int = 0
) -> float:
    """Fit ``net`` to predict ``stream.noise`` from ``stream.witnesses`` for ``steps`` Adam steps.

    Returns:
        The final training loss (mean squared error, strain units squared).
    """
    if steps <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(stream.witnesses)
    y = torch.from_numpy(stream.noise)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    started = time.monotonic()
    loss = torch.tensor(float("nan"))
    net.train()
    for step in range(steps):
        starts = torch.randint(0, x.shape[-1] - window, (batch,), generator=gen)
        xb = torch.stack([x[:, s : s + window] for s in starts])
        yb = torch.stack([y[s : s + window] for s in starts])
        opt.zero_grad()
        loss = torch.mean((net(xb) - yb) ** 2)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 20 == 0:
            logger.info("training step %d/%d: loss %.4f", step, steps, loss.item())
    net.eval()
    logger.info("trained %d steps in %.1f s, loss %.4f", steps, time.monotonic() - started, loss.item())
    return float(np.float32(loss.item()))
