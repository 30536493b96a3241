"""The model half of the encoder: the runner, the shared-prefix cache, fused blocks and the ONNX Runtime backend.

The model half of the encoder: token ids -> hidden states at the read-out layer (the runner), the
shared prompt prefix's key/value cache, the compiled (fused) block forwards, and the float32 export run
by ONNX Runtime (``backend="onnxruntime"``); ``choice`` attaches what the configuration asks for."""
