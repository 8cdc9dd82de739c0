"""The hermes demo: a DeepClean-shaped analysis streamed through quiver, aeriel and stillwater.

Needs torch, onnx/onnxruntime, hermes-quiver, hermes-stillwater and matplotlib
(``pip install "hermes-aeriel[demo]"`` plus torch). Run it with ``hermes demo`` or::

    from hermes.aeriel.demo import DemoConfig, run_demo
    print(run_demo(DemoConfig(seconds=4, streams=2)).summary())
"""

from hermes.aeriel.demo.run import DemoConfig, DemoError, DemoReport, run_demo

__all__ = ["DemoConfig", "DemoError", "DemoReport", "run_demo"]
