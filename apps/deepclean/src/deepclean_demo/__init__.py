"""The hermes demo: a DeepClean-shaped analysis streamed through quiver, aeriel and stillwater.

An application on top of the four hermes libraries, using only their public APIs. It needs
torch (installed the way your site needs it; ``hermes demo`` says how when it is missing).
Run it with ``make demo``, ``hermes demo`` or::

    from deepclean_demo import DemoConfig, run_demo
    print(run_demo(DemoConfig(seconds=4, streams=2)).summary())
"""

from deepclean_demo.config import DemoConfig
from deepclean_demo.exceptions import DemoError, TorchMissingError
from deepclean_demo.report import DemoReport
from deepclean_demo.run import run_demo

__all__ = ["DemoConfig", "DemoError", "DemoReport", "TorchMissingError", "run_demo"]
