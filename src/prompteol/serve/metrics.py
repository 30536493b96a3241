"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServeMetrics", "ROUTES"]

#: paths with their own label; anything else is counted as "other" (bounded label values)
ROUTES = ("/v1/embeddings", "/v1/models", "/health", "/metrics")

# seconds: CPU batches of a 135M model take 0.1-5 s, so the buckets reach a minute
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("prompteol_http_requests", "HTTP requests by path and status code",
                                ["path", "status"], registry=r)  # fmt: skip
        self.latency = Histogram("prompteol_http_request_seconds", "time from request to response, by path",
                                 ["path"], buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.sentences = Counter("prompteol_sentences", "sentences embedded", registry=r)
        self.prompt_tokens = Counter("prompteol_prompt_tokens", "tokens of the rendered prompts embedded", registry=r)
        self.cancelled = Counter("prompteol_requests_cancelled", "requests whose client left before the answer",
                                 registry=r)  # fmt: skip
        self.batch_sentences = Histogram("prompteol_batch_sentences", "sentences per merged batch",
                                         buckets=_COUNT_BUCKETS, registry=r)  # fmt: skip
        self.batch_requests = Histogram("prompteol_batch_requests", "requests (or request chunks) merged per batch",
                                        buckets=_COUNT_BUCKETS, registry=r)  # fmt: skip
        self.batch_tokens = Histogram("prompteol_batch_tokens", "prompt tokens per merged batch",
                                      buckets=_TOKEN_BUCKETS, registry=r)  # fmt: skip
        self.batch_seconds = Histogram("prompteol_batch_seconds", "model time per merged batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.queue_depth = Gauge("prompteol_queue_depth", "requests (or request chunks) waiting for the model",
                                 registry=r)  # fmt: skip
        self.queue_sentences = Gauge("prompteol_queue_sentences", "sentences waiting for the model", registry=r)
