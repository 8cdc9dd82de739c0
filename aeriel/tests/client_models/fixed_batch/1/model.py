"""A model with a fixed batch of 4: y = 2 x + row index; refuses any other batch."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = 2 * x + np.arange(x.shape[0], dtype=np.float32)[:, None]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return responses
