"""Write the golden vectors of ``test_reference.py``: the REFERENCE scorer's vectors (not prompteol's) of
a few sentences, for one real model folder.

    python tests/reference/make_golden.py ~/.cache/prompteol/models/smollm2-135m \
        -o tests/reference/golden_smollm2-135m.json

The file records the sha256 of the weights it was computed from; the test compares prompteol's vectors
with these only for the same weights. The vectors are float32 values written with 9 significant digits,
which read back bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_scorer import ReferenceScorer, prompt  # noqa: E402

#: what the reference's normalisation acts on: no final punctuation, a final ?, inner double quotes, a final
#: quote, an empty sentence, a long sentence, non-ASCII text
SENTENCES = [
    "A man is playing a guitar.",
    "A man plays the guitar",
    "Is the cat sleeping on the sofa?",
    'She said "hello" to the neighbours.',
    "The sign read 'closed'",
    "",
    "Stocks fell sharply on Monday after the central bank raised interest rates for the third time this year.",
    "Ein Hund läuft im Park.",
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--model-name", default=None, help="the packaged alias the folder is (default: its name)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    folder = Path(args.model_dir).expanduser()
    vectors = ReferenceScorer(folder).encode(SENTENCES, batch_size=16)  # (8, H), left-padded batch of 8
    record = {
        "what": "PromptEOL vectors of the reference scorer (tests/reference/reference_scorer.py), float32",
        "model": args.model_name or folder.name,
        "weights_sha256": sha256(folder / "model.safetensors"),
        "sentences": SENTENCES,
        "prompts": [prompt(s) for s in SENTENCES],
        "vectors": [[float(f"{x:.9g}") for x in row] for row in vectors.tolist()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "tests/reference/make_golden.py", *sys.argv[1:]]),
        "versions": {"python": platform.python_version(), "torch": version("torch"),
                     "transformers": version("transformers"), "numpy": version("numpy")},  # fmt: skip
    }
    Path(args.output).write_text(json.dumps(record) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {vectors.shape}")


if __name__ == "__main__":
    main()
