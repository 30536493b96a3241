"""The training-free methods published after PromptEOL, each a :class:`Method` registered by name.

=======================  ==================  =========================================================
method (module)          option(s)           seam
=======================  ==================  =========================================================
``ensemble``             ``prompts``,        members: one encoder per template, vectors averaged or
                         ``combine``         concatenated (MetaEOL)
``embed_filter``         ``embed_filter``,   read-out: the pooled vector's coordinates in a band of
                         ``..._band``        the LM head's right singular vectors (EmbedFilter)
``token_prepending``     ``token_prepending``  prompts (a placeholder token) + interventions in every
                                             call (Token Prepending)
``contrastive``          ``contrastive_*``   interventions per call: the auxiliary prompt's attention
                                             output steers the last token's (Contrastive Prompting)
``echo``                 an echo template    pooling spans: the sentence's second copy (echo)
=======================  ==================  =========================================================

The Pretended CoT and Knowledge Enhancement prompts are templates (no method). A new method is a new
module here with a :func:`register`-ed :class:`Method` subclass, imported below (docs/architecture.md).
"""

from __future__ import annotations

# isort: off
# registered in this order, the order the encoder builds them in (a composite method first)
from . import ensemble, embed_filter, token_prepending, contrastive, echo  # noqa: F401
# isort: on
from .base import METHODS, Method, MethodSetup, ModelCall, build_methods, dim_fields, register

__all__ = ["METHODS", "Method", "MethodSetup", "ModelCall", "build_methods", "dim_fields", "register"]
