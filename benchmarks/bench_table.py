"""Print the Markdown table of a `prompteol bench` record (the tables of docs/performance.md), so a table
is generated from its record, never copied by hand.

    python benchmarks/bench_table.py docs/results/bench_smollm2-135m_avx512bf16.json [more.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _f(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def table(record: dict) -> str:
    res = record["results"]
    base = res.get("prompteol", {}).get("sentences_per_s")
    flags = ", ".join(k for k, v in record["machine"]["flags"].items() if v)
    lines = [
        f"{record['model']}: {record['n_sentences']} STS-B train sentences timed, {record['threads']} threads, batch "
        f"{record['batch_size']}, accuracy on the first {record['accuracy_subset'].get('pairs', '?')} pairs of STS-B dev; "
        f"CPU {record['machine']['processor']} ({flags}); {record['date'][:10]}",
        "",
        "| config | sentences/s | / `prompteol` | % of own dtype's peak | STS-B dev subset (change) | cosine to float32 "
        "min / mean | max \\|diff\\| | warm-up (compile) s | peak RSS MB | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        if "gemm_flops" in r:
            lines.append(f"| `{name}` | {r['gemm_flops'] / 1e9:.1f} GFLOP/s ({r['gemm_op']}) | | 100% {r['gemm_dtype']} "
                         f"| | | | | {_f(r.get('peak_rss_mb'), '.0f')} | peak |")  # fmt: skip
            continue
        if "did_not_load" in r:
            lines.append(f"| `{name}` | | | | | | | | | did not load: {r['did_not_load'][:80]} |")
            continue
        sps = r.get("sentences_per_s")
        peak = r.get("fraction_of_own_peak")
        own = f"{100 * peak:.0f}% {r.get('own_peak')}" if peak is not None else (
            f"({100 * r['fraction_of_gemm_peak']:.0f}% of gemm)" if r.get("fraction_of_gemm_peak") else "")  # fmt: skip
        sts = r.get("sts", {}).get("spearman")
        change = r.get("sts_change")
        sts_text = _f(sts, ".2f") + (f" ({change:+.2f})" if change is not None else "")
        cos = f"{r['cos_min']:.4f} / {r['cos_mean']:.4f}" if r.get("cos_min") is not None else ""
        fused = r.get("fused") or {}
        backend = r.get("backend") or {}
        warm = _f(r.get("warmup_s"), ".1f") + (f" ({fused['compile_s']:.0f})" if fused.get("compile_s") else "")
        if backend.get("export_s"):
            warm += f" (export {backend['export_s']:.0f})"
        status = r.get("status", "")
        if fused.get("fallback"):
            status += f"; fused fell back to eager: {fused['fallback'][:60]}"
        if backend.get("fallback"):
            status += f"; ONNX Runtime fell back to torch: {backend['fallback'][:60]}"
        rate = _f(sps, ".2f" if sps is not None and sps < 10 else ".1f")  # (2 decimals below 10/s: the ratio stays exact)
        lines.append(f"| `{name}` | {rate} | {_f(sps / base if sps and base else None, '.2f')}x | {own} | "
                     f"{sts_text} | {cos} | {_f(r.get('max_abs_diff'), '.1e')} | {warm} | "
                     f"{_f(r.get('peak_rss_mb'), '.0f')} | {status} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+")
    args = p.parse_args(argv)
    for path in args.records:
        print(f"#### {Path(path).name}\n")
        print(table(json.loads(Path(path).read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
