"""OUTPUT0 = INPUT0; a request whose first value is -999 gets an error response."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if x.size and x.flat[0] == -999:
                error = pb_utils.TritonError("identity refuses -999")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.ascontiguousarray(x))])
            )
        return responses
