"""``prompteol export sentence-transformers``: an encoder as a folder that ``SentenceTransformer(OUT)`` loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import add_encoder_args, build_encoder


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export an encoder for another library (sentence-transformers)",
        description="Write an encoder (model, template, demonstrations, layer, pooling, ...) in another library's "
        "format. See docs/ecosystem.md.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    st = formats.add_parser(
        "sentence-transformers",
        help="a sentence-transformers model folder (vectors equal `prompteol encode`'s)",
        description="Write OUT, a folder that sentence_transformers.SentenceTransformer(OUT, trust_remote_code=True) "
        "loads when prompteol is installed, and whose encode() returns the vectors of Encoder.encode for the same "
        "options: modules.json (the module prompteol.export.PromptEOLModule), config_sentence_transformers.json "
        "(cosine similarity, no prompts), prompteol_config.json (the encoder config, the model's identity) and a "
        "model card (README.md). The model is referenced (alias, absolute path or hub id) unless --copy-weights. "
        "Written into a temporary folder, then renamed.",
    )
    st.add_argument("output", metavar="OUT", help="the folder to write (must not exist or be empty, unless --force)")
    st.add_argument("--copy-weights", action="store_true",
                    help="copy the model's transformers folder (for a packaged alias, the converted one; and the "
                    "adapter) into OUT, so the export is self-contained (default: reference the model)")  # fmt: skip
    st.add_argument("--results", metavar="FILE", default=None,
                    help="a `prompteol eval -o FILE` results JSON of this encoder: its scores go into the model card "
                    "(without it, the card says no scores were measured)")  # fmt: skip
    st.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    add_encoder_args(st)
    st.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_sentence_transformers, load_results

    out = Path(args.output).expanduser()
    # everything that can fail cheaply fails before the model is loaded
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT {str(out)!r} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"OUT {str(out)!r} exists and is not empty; choose another folder or pass --force")
    results = load_results(args.results) if args.results else None
    encoder = build_encoder(args, use_embedding_cache=False)
    path = export_sentence_transformers(encoder, out, copy_weights=args.copy_weights, results=results,
                                        overwrite=args.force)  # fmt: skip
    print(f"wrote {path} (load it with SentenceTransformer({str(path)!r}, trust_remote_code=True))", file=sys.stderr)
    return 0
