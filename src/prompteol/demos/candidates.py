"""Candidate demonstrations, built reproducibly and stored as JSONL with provenance.

Two sources, mirroring the paper's two halves:

- **self-labelled sentences**: sentences of a training split (STS-B train by default; never a
  test split, and never a sentence that also occurs in a reported test set), each labelled
  with the model's own greedy one-word continuation of the PromptEOL template. This replaces
  the paper's labels from a commercial LLM.
- **dictionary definitions**: WordNet 3.0 glosses (Debian's ``wordnet-base``, read directly from
  its documented ``data.*`` files) with their headword as the word: ``meat from a deer.`` ->
  ``Venison``.

File format: one JSON object per line; the first line is ``{"provenance": {...}}`` (command,
source, seed, model, date); every other line is ``{"sentence", "word", "source", ...}``.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..encoder.prompts.templates import Demonstration
from ..errors import ConfigError, InputError

__all__ = [
    "Candidate",
    "read_candidates",
    "write_candidates",
    "wordnet_candidates",
    "self_labelled_candidates",
    "extract_word",
    "test_sentences",
]

WORDNET_DIR = "/usr/share/wordnet"
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")


@dataclass
class Candidate:
    sentence: str
    word: str
    source: str
    extra: dict = field(default_factory=dict)

    @property
    def demonstration(self) -> Demonstration:
        return Demonstration(self.sentence, self.word)


def write_candidates(path: str | Path, candidates: Sequence[Candidate], provenance: dict) -> Path:
    from ..fileio import write_text_atomic

    lines = [json.dumps({"provenance": provenance}, ensure_ascii=False)]
    lines += [json.dumps({"sentence": c.sentence, "word": c.word, "source": c.source, **c.extra}, ensure_ascii=False)
              for c in candidates]  # fmt: skip
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_candidates(path: str | Path) -> tuple[list[Candidate], dict]:
    """Candidates and the provenance record of a candidates file (JSONL, or ``sentence|word`` lines)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read candidates {path}: {exc}") from None
    out, provenance = [], {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if p.suffix != ".jsonl":
            sentence, sep, word = line.rpartition("|")
            if not sep or not word.strip():
                raise InputError(f"{path} line {n}: expected 'sentence|word'")
            out.append(Candidate(sentence, word.strip(), "file"))
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {n}: not valid JSON ({exc.msg})") from None
        if "provenance" in rec and len(rec) == 1:
            provenance = rec["provenance"]
            continue
        if not isinstance(rec.get("sentence"), str) or not isinstance(rec.get("word"), str) or not rec["word"]:
            raise InputError(f"{path} line {n}: expected string fields 'sentence' and 'word'")
        extra = {k: v for k, v in rec.items() if k not in ("sentence", "word", "source")}
        out.append(Candidate(rec["sentence"], rec["word"], rec.get("source", "file"), extra))
    if not out:
        raise InputError(f"{path} holds no candidates")
    return out, provenance


# ------------------------------------------------------------------------------ leakage guard
#: every split whose score prompteol reports as a test result
TEST_SETS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")


def test_sentences(data_dir=None) -> set[str]:
    """All sentences of every reported STS test set (whitespace-normalised, lower-cased)."""
    from ..evaluation import load_sts_pairs

    out: set[str] = set()
    for name in TEST_SETS:
        pairs = load_sts_pairs(name, data_dir)
        out.update(_key(s) for s in pairs.sentences1 + pairs.sentences2)
    return out


def _key(sentence: str) -> str:
    return " ".join(sentence.lower().split()).rstrip(" .")


# ------------------------------------------------------------------------------ WordNet
def _wordnet_entries(root: str | Path) -> Iterable[tuple[str, str, str]]:
    """``(pos, headword, definition)`` from WordNet's ``data.<pos>`` files (format: wndb(5WN))."""
    root = Path(root)
    for pos in ("noun", "adj", "verb", "adv"):
        path = root / f"data.{pos}"
        if not path.is_file():
            raise ConfigError(
                f"WordNet is not installed at {root} (missing data.{pos}); install Debian's `wordnet-base` "
                f"(apt-get install wordnet-base) or pass --wordnet-dir"
            )
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                if len(fields) < 5 or int(fields[3], 16) < 1:
                    continue
                word = fields[4]
                definition = gloss.split('; "')[0].split(";")[0].strip()
                yield pos, word, definition


def wordnet_candidates(n: int = 200, seed: int = 0, root: str | Path = WORDNET_DIR, exclude: set[str] | None = None) -> list[Candidate]:
    """``n`` definitions -> headword, sampled reproducibly.

    Kept: single-word alphabetic headwords (no underscores), definitions of 3-16 words that do
    not contain the headword. The sentence is the definition with a final period; the word is
    the headword with a capital first letter, as in the paper's examples.
    """
    pool = []
    seen: set[str] = set()
    for pos, word, definition in _wordnet_entries(root):
        if not word.isalpha() or len(word) < 3 or word.lower() in seen:
            continue
        words = definition.split()
        if not 3 <= len(words) <= 16 or word.lower() in definition.lower():
            continue
        sentence = definition.rstrip(".") + "."
        if exclude and _key(sentence) in exclude:
            continue
        seen.add(word.lower())
        pool.append(Candidate(sentence, word[0].upper() + word[1:], "wordnet-3.0", {"pos": pos}))
    rng = random.Random(seed)
    return sorted(rng.sample(pool, min(n, len(pool))), key=lambda c: c.word.lower())


# ------------------------------------------------------------------------------ self-labelled
_ANSWER = re.compile(r"""^\s*([A-Za-z][A-Za-z'\-]*)\s*["\u201d]""")


def extract_word(continuation: str) -> str | None:
    """The one word a model wrote and closed with a quote: ``'Music".'`` -> ``'Music'``.

    A continuation that does not close the quote right after one word (``'a woman is walking'``)
    is not a one-word answer and gives ``None``.
    """
    m = _ANSWER.match(continuation)
    if m is None:
        return None
    word = m.group(1).strip("'-")
    return word[0].upper() + word[1:] if len(word) >= 2 else None


def self_labelled_candidates(
    model: str,
    sentences: Sequence[str],
    batch_size: int = 16,
    max_new_tokens: int = 6,
    cache_dir=None,
    progress: bool | None = None,
    limit: int | None = None,
) -> list[Candidate]:
    """Label sentences with the model's greedy continuation of the PromptEOL template.

    Sentences whose continuation is not a one-word answer are skipped; labelling stops once
    ``limit`` candidates are found.

    The causal LM (with its head) is loaded for generation only; prompts are built by the same
    template and normalisation as the encoder.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    from ..encoder.prompts.templates import TEMPLATES, normalize_sentence
    from ..models.loading import load_tokenizer, quiet_transformers, resolve_model

    limit = len(sentences) if limit is None else limit
    resolved = resolve_model(model, cache_dir=cache_dir)
    tok = load_tokenizer(resolved.path, offline=resolved.kind != "hub")
    tok.padding_side = "left"  # generation continues after the last token of every row
    with quiet_transformers():
        lm = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    out: list[Candidate] = []
    show = sys.stderr.isatty() if progress is None else progress
    for i in tqdm(range(0, len(sentences), batch_size), disable=not show, desc="self-label", unit="batch"):
        batch = [normalize_sentence(s) for s in sentences[i : i + batch_size]]
        enc = tok([TEMPLATES["prompteol"].render(s) for s in batch], return_tensors="pt", padding=True)
        with torch.inference_mode():
            gen = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for sentence, text in zip(batch, texts):
            word = extract_word(text)
            if word and len(out) < limit:
                out.append(Candidate(sentence, word, "self-labelled", {"continuation": text}))
        if len(out) >= limit:
            break
    return out


def sample_training_sentences(split: str, n: int, seed: int, data_dir=None, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct sentences of 4-20 words from a training split, none in ``exclude``."""
    from ..evaluation import load_sts_pairs

    if split in TEST_SETS or "test" in split.lower():
        raise ConfigError(f"candidates must come from a training split, not {split!r}")
    pairs = load_sts_pairs(split, data_dir)
    pool = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    pool = [s for s in pool if 4 <= len(s.split()) <= 20 and not (exclude and _key(s) in exclude)]
    rng = random.Random(seed)
    return rng.sample(pool, min(n, len(pool)))


def provenance(**info) -> dict:
    from .. import __version__

    return {**info, "prompteol": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def candidates_to_dicts(candidates: Sequence[Candidate]) -> list[dict]:
    return [asdict(c) for c in candidates]
