"""Model sources: packaged offline models, GGUF files, local folders, hub ids, tiny test models."""

from .registry import DEFAULT_MODEL, PACKAGED_MODELS, PackagedModel

__all__ = ["DEFAULT_MODEL", "PACKAGED_MODELS", "PackagedModel"]
