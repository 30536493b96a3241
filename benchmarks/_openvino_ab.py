"""What the OpenVINO benchmark scripts share (``ov_int8.py``, ``ov_graph_variants.py``): the float32 reference on an
STS-B dev subset, and a bfloat16 OpenVINO encoder whose compiled graph a script swaps (``forward.session``)."""

from __future__ import annotations


def reference_and_openvino(model: str, subset, warm: list[str], batch_size: int):
    """``(reference vectors, reference score, encoder, its OpenVINO forward)``: torch float32's vectors of the
    subset's sentences and their score, then the model on the OpenVINO backend in bfloat16, exported (once per
    machine), compiled and checked on ``warm``; exits when the backend is not active."""
    from prompteol import Encoder

    ref = Encoder.from_pretrained(model, embedding_cache=False, dtype="float32", backend="torch")
    ref_vectors = ref.encode(subset.sentences, batch_size=batch_size)
    ref_score = subset.score(ref_vectors)
    print(f"torch float32: STS-B dev {ref_score:.2f}", flush=True)
    del ref
    enc = Encoder.from_pretrained(model, embedding_cache=False, dtype="bfloat16", backend="openvino")
    enc.encode(warm, use_embedding_cache=False)
    forward = enc.runner.onnx
    if forward is None or forward.session is None or forward.failed:
        raise SystemExit(f"the OpenVINO backend is not active: {enc.describe()['backend']}")
    return ref_vectors, ref_score, enc, forward
