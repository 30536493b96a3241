"""The model half of the encoder: the runner, the shared-prefix cache and fused blocks.

The model half of the encoder: token ids -> hidden states at the read-out layer (the runner), the
shared prompt prefix's key/value cache, and the compiled (fused) block forwards."""
