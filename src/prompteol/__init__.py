"""prompteol: sentence embeddings from decoder-only LLMs with the PromptEOL method.

>>> import prompteol
>>> enc = prompteol.Encoder.from_pretrained("smollm2-135m")   # doctest: +SKIP
>>> enc.encode(["A man is playing a guitar."]).shape            # doctest: +SKIP
(1, 576)

Importing the package does not import torch; the model stack is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily, so `import prompteol` stays light)
_EXPORTS = {
    "Encoder": ".encoder.encoder",
    "EncoderConfig": ".encoder.config",
    "Template": ".encoder.prompts.templates",
    "Demonstration": ".encoder.prompts.templates",
    "TEMPLATES": ".encoder.prompts.templates",
    "get_template": ".encoder.prompts.templates",
    "normalize_sentence": ".encoder.prompts.templates",
    "EmbeddingCache": ".cache.store",
    "PACKAGED_MODELS": ".models.registry",
    "DEFAULT_MODEL": ".models.registry",
    "PrompteolError": ".errors",
    "ConfigError": ".errors",
    "InputError": ".errors",
    "ModelNotFoundError": ".errors",
    "ModelDownloadError": ".errors",
    "ChecksumError": ".errors",
    "DataError": ".errors",
    "MissingExtraError": ".errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .cache.store import EmbeddingCache
    from .encoder.config import EncoderConfig
    from .encoder.encoder import Encoder
    from .encoder.prompts.templates import TEMPLATES, Demonstration, Template, get_template, normalize_sentence
    from .errors import (
        ChecksumError,
        ConfigError,
        DataError,
        InputError,
        MissingExtraError,
        ModelDownloadError,
        ModelNotFoundError,
        PrompteolError,
    )
    from .models.registry import DEFAULT_MODEL, PACKAGED_MODELS


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
