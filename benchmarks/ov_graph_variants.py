"""Other graphs for the OpenVINO backend: does removing the attention's small nodes or fusing matrix products help?

After two streams (docs/performance.md) the README's main job still took ~309 s of encoding on a 2-core
AVX512-BF16 machine. This script tests the obvious graph-level levers, each against the backend's own export,
in one run, bfloat16, two streams, on the same token ids (the encoder's batches; only the compiled graph is
swapped):

* ``export``: the backend's graph as it is on disk (the ``grouped`` attention below where a key/value head serves
  at most 4 query heads, else ``expanded``: ``default_attention`` in :mod:`prompteol.encoder.forward.export`);
* ``expanded``: the first graph (``torch.onnx``, eager attention: the prefix's keys/values expanded to the
  batch and concatenated, grouped-query heads repeated; OpenVINO runs those broadcasts in a reference kernel);
* ``grouped``: the same model with an attention written without any broadcast: the prefix's keys/values stay
  batch 1 (a broadcasting matmul), the query heads of one key/value head are grouped into one matmul (the
  backend's ``grouped`` graph, whatever the model's default; ``grouped-fused`` and ``last-rows`` build on this
  script's own copy of that attention);
* ``grouped-5d``: ``grouped`` with the query heads of a key/value head as their own axis (a view of the queries,
  the keys/values broadcast over it) instead of reshaped into one matmul's rows;
* ``prefix-apart``: only the prefix kept apart (batch 1, a broadcasting matmul), the key/value heads repeated per
  query head as in the eager attention;
* ``grouped-fused``: ``grouped`` plus q/k/v projections in one matmul and gate/up in one matmul per block;
* ``sdpa``: the torch module converted by ``openvino.convert_model`` with torch's SDPA attention, which
  becomes OpenVINO's fused ``ScaledDotProductAttention`` op;
* ``last-rows``: ``grouped`` whose last block keeps only each row's last real token after its attention (the
  MLP and norms on one token a row, as llama.cpp does for the outputs it returns): a graph input
  ``last_index``, output (batch, 1, hidden), put back at the last positions for the encoder's pooling.

Per variant: sentences/s (rounds alternated), STS-B dev subset and the lowest cosine to torch float32, and
the share of the graph's node time in OpenVINO's ``FullyConnected`` (the matrix products) from a profile.

    python benchmarks/ov_graph_variants.py --model smollm2-135m --threads 2 \\
        -o docs/results/ov_graph_variants_smollm2-135m_avx512bf16.json

``--precision f32`` compiles every variant in float32 instead (its accuracy columns then compare float32 with
float32); ``--runtime onnxruntime`` runs the variants' files in ONNX Runtime (float32, the backend's session
options; the encoder's calls stay those of the OpenVINO encoder: ``--batch-size`` sentences per stream, two
streams' worth a call).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("export", "expanded", "prefix-apart", "grouped", "grouped-5d", "grouped-fused", "sdpa", "last-rows")
_PREFIX: dict[int, tuple] = {}  # layer -> the prefix's (keys, values), batch 1, set by the traced module
_LAST: list = []  # the last real token of each row (last-rows), set by the traced module


def _grouped_attention(module, q, k, v, mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Eager attention without broadcasts: the prefix (batch 1) by broadcasting matmuls, grouped query heads."""
    scaling = module.head_dim**-0.5 if scaling is None else scaling
    b, h, t, d = q.shape
    groups = k.shape[1]
    pk, pv = _PREFIX[module.layer_idx]
    p = pk.shape[2]
    qg = q.reshape(b, groups, (h // groups) * t, d)
    s = torch.cat([torch.matmul(qg, pk.transpose(2, 3)), torch.matmul(qg, k.transpose(2, 3))], dim=-1) * scaling
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    s = s.reshape(b, h, t, p + t) + mask[:, :, :, : p + t]
    w = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype).reshape(b, groups, (h // groups) * t, p + t)
    out = torch.matmul(w[..., :p], pv) + torch.matmul(w[..., p:], v)
    return out.reshape(b, h, t, d).transpose(1, 2).contiguous(), None


class _Fused(torch.nn.Module):
    """One matmul for several Linear layers of the same input; ``out`` keeps the parts for :class:`_Part`."""

    def __init__(self, linears):
        super().__init__()
        self.sizes = [lin.out_features for lin in linears]
        self.weight = torch.nn.Parameter(torch.cat([lin.weight for lin in linears]), requires_grad=False)
        bias = [lin.bias for lin in linears]
        self.bias = None if bias[0] is None else torch.nn.Parameter(torch.cat(bias), requires_grad=False)
        self.out: tuple = ()

    def forward(self, x):
        self.out = torch.split(torch.nn.functional.linear(x, self.weight, self.bias), self.sizes, dim=-1)
        return self.out[0]


class _Part(torch.nn.Module):
    """Part ``i`` of a :class:`_Fused` product computed just before (same input)."""

    def __init__(self, fused: _Fused, i: int):
        super().__init__()
        self.fused, self.i = [fused], i  # a list: not a second registered copy of the weights

    def forward(self, x):
        return self.fused[0].out[self.i]


@contextlib.contextmanager
def _fused_projections(blocks):
    """q/k/v in one matmul, gate/up in one matmul, in every block (llama / qwen2 / gemma3 layouts), undone after."""
    undo = []
    try:
        for blk in blocks:
            attn, mlp = blk.self_attn, blk.mlp
            old = (attn.q_proj, attn.k_proj, attn.v_proj)
            qkv = _Fused(old)
            attn.q_proj, attn.k_proj, attn.v_proj = qkv, _Part(qkv, 1), _Part(qkv, 2)
            undo.append(lambda attn=attn, old=old: setattr(attn, "q_proj", old[0]) or setattr(attn, "k_proj", old[1])
                        or setattr(attn, "v_proj", old[2]))  # fmt: skip
            gate_up = _Fused((mlp.gate_proj, mlp.up_proj))
            mlp.forward = lambda x, mlp=mlp, gu=gate_up: mlp.down_proj(mlp.act_fn(gu(x)) * gu.out[1])
            undo.append(lambda mlp=mlp: mlp.__dict__.pop("forward"))
        yield
    finally:
        for u in undo:
            u()


class _LastRowsBlock(torch.nn.Module):
    """A decoder block computed for every token up to its attention (keys/values, queries), then for each row's
    last token only: the block itself is called on those rows, its attention on the whole normalized input."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, hidden_states, *args, **kwargs):
        rows = torch.arange(hidden_states.shape[0])
        last = _LAST[0]
        attn = self.block.self_attn
        normed = self.block.input_layernorm(hidden_states)

        class Gathered(torch.nn.Module):
            def forward(self, hidden_states=None, **kw):  # the block's norm of the last rows: not used
                out, weights = attn(hidden_states=normed, **kw)
                return out[rows, last].unsqueeze(1), weights

        self.block.self_attn = Gathered()
        try:
            return self.block(hidden_states[rows, last].unsqueeze(1), *args, **kwargs)
        finally:
            self.block.self_attn = attn


class _LastRowsSession:
    """An OpenVINO session on a last-rows graph behind the backend's ``run``: adds ``last_index`` (from the mask's
    diagonal: the real tokens) and puts the one output row back at its last position of a (B, T, H) array."""

    def __new__(cls, compiled, streams: int):
        import numpy as np

        from prompteol.encoder.forward.onnx import _OpenVinoSession

        class Session(_OpenVinoSession):
            ROWS = (*_OpenVinoSession.ROWS, "last_index")
            span = staticmethod(lambda mask: (0, mask.shape[2]))  # last_index counts every column: no trimming

            def run(self, names, feed):
                mask, t = feed["attention_mask"], feed["input_ids"].shape[1]
                p = mask.shape[3] - t
                real = mask[:, 0, np.arange(t), p + np.arange(t)] == 0  # (B, T)
                last = (t - 1 - np.argmax(real[:, ::-1], axis=1)).astype(np.int64)
                (out,) = super().run(names, {**feed, "last_index": last})
                full = np.zeros((out.shape[0], t, out.shape[2]), dtype=out.dtype)
                full[np.arange(out.shape[0]), last] = out[:, 0]
                return [full]

        return Session(compiled, streams)


def _build(variant: str, forward, folder: Path):
    """The variant's OpenVINO model (inputs and output named as the backend's export)."""
    import openvino as ov
    from transformers import AttentionInterface
    from transformers.cache_utils import DynamicLayer

    from prompteol.encoder.forward.export import GraphExport
    from prompteol.models.loading import find_decoder_layers

    core = ov.Core()
    if variant == "export":
        return core.read_model(str(Path(forward.path) / "model.onnx"))
    model, layer = forward.model, forward.layer
    if variant in ("expanded", "prefix-apart", "grouped", "grouped-5d"):  # the backend's attentions (prompteol.encoder.forward.export)
        folder.mkdir(parents=True, exist_ok=True)
        GraphExport(model, forward.blocks, layer, forward.num_layers, variant).write(folder, forward.heads, forward.head_dim)
        return core.read_model(str(folder / "model.onnx"))
    top = layer == forward.num_layers
    parent, attr, full = find_decoder_layers(model, forward.num_layers)
    ids = torch.tensor([[5, 6, 7], [5, 6, 1]])
    positions = 2 + torch.tensor([[0, 1, 2], [0, 1, 1]])
    mask = torch.zeros(2, 1, 3, 5)
    past = [torch.zeros(1, forward.heads, 2, forward.head_dim) for _ in range(2 * layer)]
    names = ["input_ids", "attention_mask", "position_ids", *[f"past_{k}{i}" for i in range(layer) for k in "kv"]]
    impl = model.config._attn_implementation
    setattr(parent, attr, torch.nn.ModuleList(list(full)[:layer]))
    try:
        if variant == "sdpa":  # the backend's own module, traced by OpenVINO's PyTorch frontend
            model.set_attn_implementation("sdpa")
            first = DynamicLayer.update

            def update(self, k, v, *args, **kwargs):  # no empty tensor to concatenate with (the frontend refuses it)
                if not self.is_initialized:
                    self.keys, self.values, self.is_initialized, self.device = k, v, True, k.device
                    return k, v
                return first(self, k, v, *args, **kwargs)

            DynamicLayer.update = update
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    converted = ov.convert_model(GraphExport(model, forward.blocks, layer, forward.num_layers, "expanded").module(),
                                                 example_input=(ids, mask, positions, *past))  # fmt: skip
            finally:
                DynamicLayer.update = first
            for port, name in zip(converted.inputs, names, strict=True):
                port.get_tensor().set_names({name})
            converted.outputs[0].get_tensor().set_names({"hidden"})
            return converted
        AttentionInterface.register("prompteol_grouped", _grouped_attention)
        model.set_attn_implementation("prompteol_grouped")
        blocks = forward.blocks

        class Truncated(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, input_ids, attention_mask, position_ids, *prefix):
                if variant == "last-rows":
                    _LAST[:] = [prefix[0]]
                    prefix = prefix[1:]
                for i in range(len(prefix) // 2):
                    _PREFIX[i] = (prefix[2 * i], prefix[2 * i + 1])
                got: list = []
                hook = (
                    None
                    if top
                    else blocks[layer - 1].register_forward_hook(
                        lambda m, a, o: got.append(o[0] if isinstance(o, tuple) else o)
                    )
                )
                try:
                    out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False).last_hidden_state  # fmt: skip
                finally:
                    if hook is not None:
                        hook.remove()
                return out if top else got[-1]

        axes = {"input_ids": {0: "b", 1: "t"}, "position_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 2: "t", 3: "s"},
                "hidden": {0: "b", 1: "t"}, **{n: {2: "p"} for n in names[3:]}}  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        fuse = _fused_projections(list(full)[:layer]) if variant == "grouped-fused" else contextlib.nullcontext()
        inputs = (ids, mask, positions, *past)
        if variant == "last-rows":
            blocks_in = [*list(full)[: layer - 1], _LastRowsBlock(full[layer - 1])]
            setattr(parent, attr, torch.nn.ModuleList(blocks_in))
            inputs = (ids, mask, positions, torch.tensor([2, 1]), *past)
            names = [*names[:3], "last_index", *names[3:]]
            axes["last_index"] = {0: "b"}
        with fuse, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Truncated(), inputs, str(folder / "model.onnx"), dynamo=False,
                              opset_version=17, input_names=names, output_names=["hidden"], dynamic_axes=axes)  # fmt: skip
        return core.read_model(str(folder / "model.onnx"))
    finally:
        setattr(parent, attr, full)
        model.set_attn_implementation(impl)


def _ort_session(path: Path, threads: int):
    """ONNX Runtime on ``path`` with the backend's session options (``OnnxForward._session``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=1500, help="STS-B train sentences timed per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds, variants alternated (default: %(default)s)")
    p.add_argument("--sts-pairs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--precision", default="bf16", choices=("bf16", "f32"), help="OpenVINO's inference precision")
    p.add_argument("--runtime", default="openvino", choices=("openvino", "onnxruntime"),
                   help="run the variants' graphs in this runtime (onnxruntime: float32, no node profile)")  # fmt: skip
    p.add_argument("--work-dir", default="/tmp/prompteol_ov_variants", help="where the variants' graphs are written")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="write the JSON record here (atomically)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    import openvino as ov
    from _openvino_ab import reference_and_openvino

    from prompteol.bench import StsDevSubset, cosine_rows, load_sentences
    from prompteol.encoder.forward.onnx import _OpenVinoSession

    subset = StsDevSubset(args.data_dir, args.sts_pairs)
    timed = load_sentences(args.data_dir, args.n)
    ref_dev, ref_score, enc, forward = reference_and_openvino(args.model, subset, timed[:8], args.batch_size)
    core = ov.Core()
    props = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": forward.streams, "INFERENCE_PRECISION_HINT": args.precision}
    rows: dict[str, dict] = {}
    sessions = {}
    for name in args.variants:
        started = time.perf_counter()
        graph = _build(name, forward, Path(args.work_dir) / f"{args.model}-{name}")
        ops = collections.Counter(op.get_type_name() for op in graph.get_ops())
        node_s: collections.Counter = collections.Counter()
        if args.runtime == "onnxruntime":  # the graph's file in ONNX Runtime, as the backend opens it; no profile
            if name in ("sdpa", "last-rows"):
                raise SystemExit(f"variant {name} runs on OpenVINO only")
            path = Path(forward.path) / "model.onnx" if name == "export" else Path(args.work_dir) / f"{args.model}-{name}" / "model.onnx"
            sessions[name] = _ort_session(path, args.threads)
        else:
            session = _LastRowsSession if name == "last-rows" else _OpenVinoSession
            sessions[name] = session(core.compile_model(graph, "CPU", props), forward.streams)
            profiled = session(core.compile_model(graph, "CPU", {**props, "PERF_COUNT": True}), forward.streams)
            forward.session = profiled
            enc.encode(timed[:256], batch_size=args.batch_size, use_embedding_cache=False)
            for request in profiled.requests:  # the last batch each request ran
                for info in request.profiling_info:
                    node_s[info.node_type] += info.real_time.total_seconds()
        forward.session = sessions[name]
        vectors = enc.encode(subset.sentences, batch_size=args.batch_size, use_embedding_cache=False)
        cos = cosine_rows(vectors, ref_dev)
        sts = subset.score(vectors)
        total = sum(node_s.values()) or 1.0
        rows[name] = {"variant": name, "prepare_s": round(time.perf_counter() - started, 1), "rates": [],
                      "ops": {k: ops.get(k, 0) for k in ("MatMul", "Broadcast", "ScaledDotProductAttention", "Concat")},
                      "fully_connected_share": round(node_s.get("FullyConnected", 0.0) / total, 3) if node_s else None,
                      "sts_b_dev": round(sts, 2), "change": round(sts - ref_score, 2), "cosine_min": round(float(cos.min()), 5)}  # fmt: skip
        print(f"{name:14s} STS-B dev {sts:.2f} ({sts - ref_score:+.2f}), cosine min {cos.min():.4f}, "
              f"FullyConnected {100 * (rows[name]['fully_connected_share'] or 0):.0f}% of node time, ops {rows[name]['ops']}", flush=True)  # fmt: skip
    for r in range(args.rounds):
        for name in args.variants:
            forward.session = sessions[name]
            enc.encode(timed[:64], batch_size=args.batch_size, use_embedding_cache=False)
            t = time.perf_counter()
            enc.encode(timed, batch_size=args.batch_size, use_embedding_cache=False)
            rows[name]["rates"].append(round(len(timed) / (time.perf_counter() - t), 2))
            print(f"round {r + 1} {name:14s} {rows[name]['rates'][-1]:7.1f} sentences/s", flush=True)
    base = float(np.mean(rows[args.variants[0]]["rates"]))
    for row in rows.values():
        row["sentences_per_s"] = round(float(np.mean(row["rates"])), 2)
        row["vs_first"] = round(row["sentences_per_s"] / base, 3)
    from prompteol.records import provenance

    record = {"schema": "prompteol.ov-graph-variants/1", "model": args.model, "threads": args.threads, "n": len(timed),
              "rounds": args.rounds, "runtime": args.runtime, "precision": "f32" if args.runtime == "onnxruntime" else args.precision, "sts_pairs": len(subset), "batch_size": args.batch_size, "streams": forward.streams,
              "float32_sts_b_dev": round(ref_score, 2), "rows": list(rows.values()),
              "provenance": provenance(threads=args.threads)}  # fmt: skip
    print(json.dumps({k: v for k, v in record.items() if k != "provenance"}))
    if args.output:
        from prompteol.fileio import write_json_atomic

        write_json_atomic(Path(args.output), record)


if __name__ == "__main__":
    main()
