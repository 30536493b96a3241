"""The corpus engine: files of sentences in, files of vectors out, around :meth:`Encoder.encode`.

- ``formats``: input listing and validation, the one JSONL parser and its messages;
- ``tables``: a file (or a row range) as Arrow tables, every column kept;
- ``source``: the local executor's input (text, JSONL, Parquet, stdin), chunk by chunk;
- ``sinks``: ``.npy`` / ``.jsonl`` / ``.parquet`` outputs, written atomically;
- ``resume``: the progress record, the manifest, the settings-differ and the output locks;
- ``local``: the local executor (``prompteol encode``), streamed and resumable;
- ``shards`` and ``distributed``: the Ray executor (``prompteol encode --engine ray``).

Nothing here imports torch, pyarrow or ray at import time.
"""
