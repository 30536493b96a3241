"""The model half of the encoder: the runner, the shared-prefix cache, fused blocks and the exported-graph backends.

The model half of the encoder: token ids -> hidden states at the read-out layer (the runner), the
shared prompt prefix's key/value cache, the compiled (fused) block forwards, and the float32 export run
by ONNX Runtime (``backend="onnxruntime"``) or OpenVINO (``backend="openvino"``, float32 or bfloat16);
``choice`` attaches what the configuration asks for and resolves ``backend="auto"``."""
