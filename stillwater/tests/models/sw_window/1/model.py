"""Keeps each sequence's last 8 samples per channel: update (1, 2, 4) -> window (1, 2, 8).

The python backend does not apply implicit state, so the state lives here by correlation id:
START (flags & 1) starts from zeros, END (flags & 2) forgets the sequence.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.windows = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            update = pb_utils.get_input_tensor_by_name(request, "update").as_numpy()
            key, flags = request.correlation_id(), request.flags()
            if flags & 1 or key not in self.windows:
                self.windows[key] = np.zeros((1, 2, 8), np.float32)
            window = np.concatenate([self.windows[key], update], axis=-1)[..., -8:]
            self.windows[key] = window
            if flags & 2:
                del self.windows[key]
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("window", np.ascontiguousarray(window))])
            )
        return responses
