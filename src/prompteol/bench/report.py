"""The benchmark's table: every configuration's speed and accuracy, the ratios within tolerance, the peaks."""

from __future__ import annotations


def accuracy_text(r: dict) -> str:
    """One line: STS-B dev Spearman (and its change), cosine min/mean and max diff vs the reference."""
    parts = []
    if "sts" in r:
        sts = f"STS {r['sts']['spearman']:.2f}"
        if "sts_change" in r:
            sts += f" ({r['sts_change']:+.2f})"
        parts.append(sts)
    if "cos_min" in r:
        parts.append(f"cos {r['cos_min']:.4f}/{r['cos_mean']:.4f}")
        parts.append(f"|d| {r['max_abs_diff']:.1e} vs {r['compared_with']}")
    return "; ".join(parts)


def _peak_text(r: dict) -> str:
    if "fraction_of_own_peak" in r:
        return f"{100 * r['fraction_of_own_peak']:.0f}% {r['own_peak']}"
    if "fraction_of_gemm_peak" in r:
        return f"({100 * r['fraction_of_gemm_peak']:.0f}% gemm)"
    return ""


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(width=200, highlight=False)
    sub = report.get("accuracy_subset")
    t = Table(title=f"{report['model']}: {report['n_sentences']} STS-B train sentences, {report['threads']} threads, "
                    f"batch {report['batch_size']}, {report.get('device', 'cpu')} {report.get('dtype', 'float32')}; "
                    f"accuracy: {sub['which'] if sub else 'off'}")  # fmt: skip
    for col in ("config", "sent/s", "tok/s", "GFLOP/s", "% peak", "peak RSS MB", "weights MB",
                "accuracy (STS-B dev Spearman; cos min/mean; max |diff|)", "verdict"):  # fmt: skip
        t.add_column(col, justify="left" if col.startswith(("accuracy", "verdict")) else "right")
    for cfg, r in report["results"].items():
        if "did_not_load" in r:
            t.add_row(cfg, "", "", "", "", "", "", escape("did not load: " + r["did_not_load"][:300]), "did not load")
            continue
        if "error" in r:
            t.add_row(cfg, "", "", "", "", "", "", escape("error: " + " / ".join(r["error"])[:300]), "error")
            continue
        if "gemm_flops" in r:
            t.add_row(cfg, "", "", f"{r['gemm_flops'] / 1e9:.1f}", f"100% {r.get('gemm_dtype', '')}",
                      f"{r['peak_rss_mb']:.0f}", "", "", "")  # fmt: skip
            continue
        verdict = r.get("status", "")
        if verdict == "not comparable":
            verdict = escape(f"NOT COMPARABLE: {r.get('reason', '')}")
        elif verdict == "ok" and r.get("kind") == "base":
            verdict = "reference"
        t.add_row(
            cfg, f"{r['sentences_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
            f"{r['achieved_flops'] / 1e9:.1f}" if "achieved_flops" in r else "", _peak_text(r),
            f"{r['peak_rss_mb']:.0f}", f"{r['weights_mb']:.0f}" if r.get("weights_mb") else "",
            escape(accuracy_text(r)), verdict,
        )  # fmt: skip
    con.print(t)
    say = lambda text: con.print(text, markup=False)  # noqa: E731 - results may hold brackets
    say("  tolerances: " + "; ".join(f"{k}: {v}" for k, v in report.get("tolerances", {}).items()
                                     if k in ("exact", "lowp", "llamacpp")))  # fmt: skip
    for cfg, r in report["results"].items():
        tc = r.get("token_check")
        if tc:
            same = "identical" if not tc["mismatched"] else f"DIFFERENT for {tc['mismatched']}"
            say(f"  {cfg}: llama.cpp token ids {same} of {tc['checked']} prompts vs prompteol's "
                      f"(add_bos={tc['add_bos']})")  # fmt: skip
    for label, e in report["ratios"].items():
        acc = "; ".join(f"{k}: {v}" for k, v in e["accuracy"].items() if v)
        if e["value"] is None:
            say(f"  {label}: no ratio ({e['why_none']})")
        else:
            say(f"  {label}: {e['value']:.2f}  [{acc}]")
