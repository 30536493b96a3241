"""``prompteol data verify|download``: check a SentEval data root, or fetch the standard archive."""

from __future__ import annotations

import argparse
import os
import sys

from ..options import positive_float
from .common import console, progress_wanted


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="check or fetch the SentEval evaluation data",
        description="The evaluation data is a SentEval data root: a folder holding downstream/ (SimCSE's senteval.tar "
        "layout). Name it with --data-dir or the PROMPTEOL_DATA environment variable.",
    )
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    v = actions.add_parser("verify", help="check every file's presence and sha256 (exit code 1 on problems)")
    v.add_argument("--data-dir", default=None, help="the data root (default: $PROMPTEOL_DATA)")
    v.add_argument("--tasks", default="all", help="tasks or groups to check (default: %(default)s)")
    v.set_defaults(func=run_verify)
    d = actions.add_parser(
        "download",
        help="fetch SimCSE's senteval.tar (needs a network) and verify it",
        description="Download the standard SentEval archive that SimCSE/PromptEOL use, unpack it into DEST/downstream "
        "and verify every file. Offline this fails at once; point prompteol at a local copy with --data-dir or "
        "PROMPTEOL_DATA instead.",
    )
    d.add_argument("--dest", default=None,
                   help="data root to create (default: $PROMPTEOL_DATA, else <cache root>/senteval)")  # fmt: skip
    d.add_argument("--url", default=None, help="archive URL (default: the SimCSE senteval.tar)")
    d.add_argument("--timeout", type=positive_float, default=None, help="connect/read timeout in seconds (default: 10)")
    prog = d.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    d.set_defaults(func=run_download)


def run_verify(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..errors import DataError
    from ..evaluation import check_data, resolve_data_dir, resolve_tasks

    tasks = resolve_tasks(args.tasks)
    try:
        root = resolve_data_dir(args.data_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    statuses = check_data(root, tasks)
    by_path = {s.path: s for s in statuses}
    table = Table(title=f"SentEval data in {root}", title_justify="left")
    for col in ("task", "files", "status"):
        table.add_column(col)
    for task in tasks:
        own = [by_path[f.path] for f in task.files]
        bad = [s for s in own if not s.ok]
        status = "[green]OK[/green]" if not bad else "[red]" + ", ".join(sorted({s.status for s in bad})) + "[/red]"
        table.add_row(task.name, f"{len(own) - len(bad)}/{len(own)}", status)
    out = console()
    out.print(table)
    bad = [s for s in statuses if not s.ok]
    if getattr(args, "verbose", 0) or bad:
        detail = Table(title="files" if not bad else "problems", title_justify="left")
        for col in ("file", "status", "expected sha256"):
            detail.add_column(col)
        for s in statuses if getattr(args, "verbose", 0) else bad:
            detail.add_row(s.path, s.status, s.expected)
        out.print(detail)
    if bad:
        print(f"{len(bad)} of {len(statuses)} file(s) missing or changed under {root}", file=sys.stderr)
        return 1
    print(f"all {len(statuses)} files present with their sha256", file=sys.stderr)
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..evaluation.data import ENV_DATA
    from ..evaluation.download import CONNECT_TIMEOUT, SENTEVAL_URL, download_senteval
    from ..paths import cache_root

    dest = args.dest or os.environ.get(ENV_DATA) or str(cache_root() / "senteval")
    root = download_senteval(
        dest, url=args.url or SENTEVAL_URL, timeout=args.timeout or CONNECT_TIMEOUT,
        progress=progress_wanted(args.progress),
    )  # fmt: skip
    print(f"SentEval data verified in {root}; use it with --data-dir {root} or: export {ENV_DATA}={root}",
          file=sys.stderr)  # fmt: skip
    return 0
