"""Prompt templates, in-context demonstrations and sentence normalisation.

A :class:`Template` is typed data with exactly one ``{sentence}`` slot; a
:class:`Demonstration` is a ``(sentence, word)`` pair. Rendering is plain string
concatenation (no ``str.format``: sentences may contain braces), so the exact
strings are easy to test. Everything that builds a prompt (encode, evaluation,
demonstration search, training, serving) goes through :meth:`Template.render`.

With demonstrations, the prompt is::

    demo_1 + demo_2 + ... + before + sentence + after

where ``demo_i = before + demo.sentence + after + answer(demo.word)``. For the
PromptEOL template that is exactly the form of method.md::

    This sentence : "A man is smoking." means in one word:"Smoking".This sentence : "<S>" means in one word:"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...errors import ConfigError

__all__ = [
    "SLOT",
    "Template",
    "Demonstration",
    "TEMPLATES",
    "get_template",
    "parse_demonstration",
    "normalize_sentence",
]

SLOT = "{sentence}"
WORD_SLOT = "{word}"


@dataclass(frozen=True)
class Demonstration:
    """One in-context example: a sentence and the one word that sums it up."""

    sentence: str
    word: str

    def __post_init__(self) -> None:
        if not isinstance(self.sentence, str) or not isinstance(self.word, str):
            raise ConfigError(
                f"a demonstration is a (sentence, word) pair of strings, got "
                f"({type(self.sentence).__name__}, {type(self.word).__name__})"
            )
        if not self.word.strip():
            raise ConfigError(f"the word of demonstration {self.sentence!r} is empty; give 'sentence|word'")

    def to_dict(self) -> dict[str, str]:
        return {"sentence": self.sentence, "word": self.word}


@dataclass(frozen=True)
class Template:
    """A prompt with one ``{sentence}`` slot (or two: an *echo* template writes the sentence twice).

    ``answer`` says how a demonstration's word is written after the rendered
    demonstration sentence (it must contain ``{word}``); ``None`` means the
    template does not accept demonstrations.
    """

    name: str
    text: str
    answer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or self.text.count(SLOT) not in (1, 2):
            raise ConfigError(
                f"template {self.name!r} must contain the slot {SLOT} once (or twice for an echo template), "
                f"got {self.text!r}"
            )
        if self.text.count(SLOT) == 2 and self.answer is not None:
            raise ConfigError(f"the echo template {self.name!r} (two {SLOT} slots) takes no demonstrations")
        if self.answer is not None and self.answer.count(WORD_SLOT) != 1:
            raise ConfigError(
                f"the answer of template {self.name!r} must contain {WORD_SLOT} exactly once, got {self.answer!r}"
            )

    @property
    def echo(self) -> bool:
        """The sentence is written twice (echo embeddings pool over the second copy)."""
        return self.text.count(SLOT) == 2

    @property
    def before(self) -> str:
        """The text before the (first) sentence."""
        return self.text.split(SLOT)[0]

    @property
    def after(self) -> str:
        """The text after the sentence (after the first copy for an echo template)."""
        return self.text.split(SLOT)[1]

    def render_demonstration(self, demo: Demonstration) -> str:
        if self.answer is None:
            raise ConfigError(
                f"template {self.name!r} does not take demonstrations; use one of "
                f"{sorted(n for n, t in TEMPLATES.items() if t.answer is not None)}"
            )
        return self.before + demo.sentence + self.after + self.answer.replace(WORD_SLOT, demo.word)

    def prefix(self, demonstrations: Sequence[Demonstration] = ()) -> str:
        """Everything before the sentence: the demonstrations, then ``before``."""
        return "".join(self.render_demonstration(d) for d in demonstrations) + self.before

    def render(self, sentence: str, demonstrations: Sequence[Demonstration] = ()) -> str:
        """The full prompt for one sentence (written twice by an echo template)."""
        parts = self.text.split(SLOT)
        return self.prefix(demonstrations) + sentence + parts[1] + (sentence + parts[2] if self.echo else "")

    def before_second_copy(self, sentence: str, demonstrations: Sequence[Demonstration] = ()) -> str:
        """Everything before the second copy of the sentence (echo templates only)."""
        if not self.echo:
            raise ConfigError(f"template {self.name!r} writes the sentence once; echo pooling needs an echo template")
        return self.prefix(demonstrations) + sentence + self.after

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "text": self.text, "answer": self.answer}

    @classmethod
    def from_dict(cls, data: dict) -> Template:
        return cls(name=data["name"], text=data["text"], answer=data.get("answer"))


_METAEOL = {  # Lei et al. 2024 (MetaEOL), the eight task prompts, exact strings (shared/docs/beyond.md)
    1: "In this task, you're presented with a text excerpt. Your task is to categorize the excerpt into a broad "
       "category such as 'Education', 'Technology', 'Health', 'Business', 'Environment', 'Politics', or 'Culture'. "
       "These categories help in organizing content for better accessibility and targeting. For this task, this "
       'sentence : "{sentence}" should be classified under one general category in one word:"',
    2: "In this task, you're given a statement and you need to determine whether it's presenting an 'Opinion' or a "
       "'Fact'. This distinction is vital for information verification, educational purposes, and content analysis. "
       'For this task, this sentence : "{sentence}" discriminates between opinion and fact in one word:"',
    3: "In this task, you're given a review from an online platform. Your task is to generate a rating for the "
       "product based on the review on a scale of 1-5, where 1 means 'extremely negative' and 5 means 'extremely "
       'positive\'. For this task, this sentence : "{sentence}" reflects the sentiment in one word:"',
    4: "In this task, you're reading a personal diary entry. Your task is to identify the predominant emotion "
       "expressed, such as joy, sadness, anger, fear, or love. For this task, this sentence : \"{sentence}\" conveys "
       'the emotion in one word:"',
    5: "In this task, you're presented with two sentences. Your task is to assess whether the sentences convey the "
       "same meaning. Use 'identical', 'similar', 'different', or 'unrelated' to describe the relationship. To "
       'enhance the performance of this task, this sentence : "{sentence}" means in one word:"',
    6: "In this task, you're given a sentence and a phrase. Your task is to determine if the phrase can be a "
       "contextual synonym within the given sentence. Options include 'yes', 'no', or 'partially'. To enhance the "
       'performance of this task, this sentence : "{sentence}" means in one word:"',
    7: "In this task, you're examining a news article. Your task is to extract the most critical fact from the "
       'article. For this task, this sentence : "{sentence}" encapsulates the key fact in one word:"',
    8: "In this task, you're reviewing a scientific abstract. Your task is to identify the main entities (e.g., "
       "proteins, diseases) and their relations (e.g., causes, treats). For this task, this sentence : "
       '"{sentence}" highlights the primary entity or relation in one word:"',
}  # fmt: skip

#: Preset templates. ``prompteol`` is the exact string of every published PromptEOL number
#: (space before the first colon, no space before the final quote). Sources: :data:`TEMPLATE_SOURCES`.
TEMPLATES: dict[str, Template] = {
    "prompteol": Template("prompteol", 'This sentence : "{sentence}" means in one word:"', answer='{word}".'),
    "promptbert": Template("promptbert", 'This sentence : "{sentence}" means', answer=" {word}."),
    "raw": Template("raw", "{sentence}", answer=None),
    "cot": Template("cot", 'After thinking step by step , this sentence : "{sentence}" means in one word:"',
                    answer='{word}".'),  # fmt: skip
    "ke": Template(
        "ke",
        "The essence of a sentence is often captured by its main subjects and actions, while descriptive terms "
        'provide additional but less central details. With this in mind , this sentence : "{sentence}" means in '
        'one word:"',
        answer='{word}".',
    ),
    "cp-irrelevant": Template(
        "cp-irrelevant", 'The irrelevant information of this sentence : "{sentence}" means in one word:"',
        answer='{word}".',
    ),  # fmt: skip
    "echo": Template("echo", "Rewrite the following sentence: {sentence}\nThe rewritten sentence: {sentence}"),
    **{f"metaeol-{i}": Template(f"metaeol-{i}", text, answer='{word}".') for i, text in _METAEOL.items()},
}

#: where each preset's exact string comes from
TEMPLATE_SOURCES: dict[str, str] = {
    "prompteol": "Jiang et al. 2023, Scaling Sentence Embeddings with Large Language Models (PromptEOL)",
    "promptbert": "Jiang et al. 2022, PromptBERT (the paper's baseline prompt)",
    "raw": "no template: the sentence alone",
    "cot": "Zhang et al. 2024, Simple Techniques for Enhancing Sentence Embeddings (Pretended Chain-of-Thought); "
           "read out hidden_states[-2]",
    "ke": "Zhang et al. 2024, Simple Techniques for Enhancing Sentence Embeddings (Knowledge Enhancement); "
          "read out hidden_states[-2]",
    "cp-irrelevant": "Cheng et al. 2025, Contrastive Prompting (the auxiliary prompt)",
    "echo": "Springer et al. 2024, Repetition Improves Language Model Embeddings (zero-shot echo prompt)",
    **{f"metaeol-{i}": f"Lei et al. 2024, MetaEOL, task prompt {i} of 8" for i in _METAEOL},
}  # fmt: skip


def get_template(value: str | Template) -> Template:
    """A preset by name, a :class:`Template`, or a literal text containing ``{sentence}``."""
    if isinstance(value, Template):
        return value
    if isinstance(value, dict):  # a template as recorded in JSON (to_dict)
        return Template.from_dict(value)
    if not isinstance(value, str):
        raise ConfigError(f"template should be a preset name or a text with {SLOT}, got {type(value).__name__}")
    if value in TEMPLATES:
        return TEMPLATES[value]
    if SLOT in value:
        # A custom template takes demonstrations the PromptEOL way when it ends with an opening quote.
        return Template("custom", value, answer='{word}".' if value.endswith('"') else None)
    raise ConfigError(
        f"unknown template {value!r}; valid presets are {sorted(TEMPLATES)}, or give a text containing {SLOT}"
    )


def parse_demonstration(value: str | Demonstration | Sequence[str] | dict) -> Demonstration:
    """Accept ``Demonstration``, ``(sentence, word)``, ``{"sentence":..,"word":..}`` or ``"sentence|word"``."""
    if isinstance(value, Demonstration):
        return value
    if isinstance(value, dict):
        try:
            return Demonstration(value["sentence"], value["word"])
        except KeyError:
            raise ConfigError(f"a demonstration dict needs 'sentence' and 'word', got keys {sorted(value)}") from None
    if isinstance(value, str):
        sentence, sep, word = value.rpartition("|")
        if not sep:
            raise ConfigError(f"a demonstration is written 'sentence|word', got {value!r}")
        return Demonstration(sentence, word)
    if isinstance(value, Sequence) and len(value) == 2:
        return Demonstration(value[0], value[1])
    raise ConfigError(f"cannot read a demonstration from {value!r}; give 'sentence|word' or (sentence, word)")


def parse_demonstrations(values: Iterable | None) -> tuple[Demonstration, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, Demonstration)):
        values = [values]
    return tuple(parse_demonstration(v) for v in values)


_ENDINGS = (".", "?", '"', "'")


def normalize_sentence(sentence: str) -> str:
    """The evaluation-time normalisation of the PromptEOL reference (method.md section 1).

    1. a non-empty sentence that does not end with ``. ? " '`` gets a ``.``;
    2. every ``"`` becomes ``'``;
    3. a final ``?`` becomes ``.``.
    """
    if sentence and not sentence.endswith(_ENDINGS):
        sentence += "."
    sentence = sentence.replace('"', "'")
    if sentence.endswith("?"):
        sentence = sentence[:-1] + "."
    return sentence
