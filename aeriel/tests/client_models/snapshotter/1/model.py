"""A stateful snapshotter that keeps each sequence's last K samples itself.

Request input ``(1, C, s)``; outputs, in config order, split the newest window ``(1, C, K)``
along channels: an output with per-item dims ``[C_i, K]`` takes ``C_i`` channels, one with
``[K]`` takes one channel squeezed. START (flags & 1) resets the state, END (flags & 2) drops it.
The config's ``sequence_batching.state`` is declared (what clients discover) but, as the python
backend does not apply implicit state, the state lives here, keyed by correlation id.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.outputs = [(o["name"], [int(d) for d in o["dims"]]) for o in config["output"]]
        self.kernel = self.outputs[0][1][-1]
        self.channels = [dims[0] if len(dims) == 2 else 1 for _, dims in self.outputs]
        self.state = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            update = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
            sequence = request.correlation_id()
            flags = request.flags()
            if flags & 1 or sequence not in self.state:
                self.state[sequence] = np.zeros((1, sum(self.channels), self.kernel), np.float32)
            window = np.concatenate([self.state[sequence], update], axis=-1)[..., -self.kernel :]
            self.state[sequence] = window
            tensors = []
            first = 0
            for (name, dims), count in zip(self.outputs, self.channels, strict=True):
                part = window[:, first : first + count]
                if len(dims) == 1:
                    part = part[:, 0]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part)))
                first += count
            if flags & 2:
                self.state.pop(sequence, None)
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
