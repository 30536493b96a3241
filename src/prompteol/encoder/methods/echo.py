"""Echo embeddings (Springer et al. 2024; an echo template, ``pooling="echo"``).

The template writes the sentence twice; pooling averages the second copy only (every token of it has
seen the whole sentence). This method tells the pooler where that copy starts in each prompt; the
``echo`` pooler itself is in :mod:`prompteol.encoder.pooling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Method, register

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EncoderConfig
    from ..prompts.builder import PromptBuilder

__all__ = ["Echo"]


@register
class Echo(Method):
    """Per sentence, the index of the first token of its second copy."""

    name = "echo"

    @classmethod
    def applies(cls, config: EncoderConfig) -> bool:
        return config.template.echo

    def pool_starts(self, prompts: PromptBuilder, sentences: Sequence[str]) -> list[int]:
        """Index of the first token of the second copy in each full prompt."""
        config = self.setup.config
        # (without its trailing spaces: a space before the copy belongs to the copy's first token)
        heads = [config.template.before_second_copy(s, config.demonstrations).rstrip(" ") for s in sentences]
        ids = prompts.tokenizer(heads, add_special_tokens=True)["input_ids"] if heads else []
        shift = prompts.sentence_offset()  # tokens other methods insert before the sentence
        return [len(x) + shift for x in ids]
