#!/usr/bin/env python3
"""Peer benchmark for qinfer: PyTorch, ONNX Runtime and OpenVINO on the workload of `runner bench`.

Each engine runs an fp32 and an int8 variant of a Hugging Face BERT folder:

- torch:    transformers' BertModel from model.safetensors; int8 = torch.ao.quantization.quantize_dynamic
            over nn.Linear (qint8 weights, dynamic per-tensor activations);
- ort:      an fp32 ONNX export (torch.onnx.export); int8 = onnxruntime.quantization.quantize_dynamic
            (per-channel QInt8 weights);
- openvino: ov.convert_model of the same ONNX file, fp32 inference precision; int8 = NNCF post-training
            quantization (SmoothQuant + fast bias correction) calibrated on tests/fixtures/perplexity_text.txt.

Timing follows crates/runner/src/bench.rs: the same pseudo-random token ids, one untimed warm-up round, then
interleaved rounds of `iters` batches and `5 * iters` short texts, medians reported. Each timed call is the model
forward plus masked mean pooling and L2 normalisation; tokenisation is not timed.

Accuracy: each text of the reference corpus is tokenised with the folder's tokenizer.json (truncated to
max_seq_length), embedded one text at a time, and compared with the reference embeddings (cosine mean / min and
top-10 neighbour overlap, as crates/swap/src/eval.rs computes them).

Run through benches/peers/run, which provides the virtual environment.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("torch", "ort", "openvino")
CACHE_FORMAT = 1  # bump to invalidate every cached export


# --------------------------------------------------------------------------------------------- workload


def token_ids(count: int, vocab: int):
    """crates/runner/src/bench.rs `token_ids`: xorshift64 ids in [min(1000, vocab - 1), vocab)."""
    import numpy as np

    mask = (1 << 64) - 1
    state = 0x9E3779B97F4A7C15
    low = min(1000, max(vocab - 1, 0))
    span = vocab - low
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out[i] = low + state % span
    return out


def median(times: list[float]) -> float:
    """The upper median, as bench.rs: sorted[len / 2]."""
    return sorted(times)[len(times) // 2]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# --------------------------------------------------------------------------------------------- helpers


def resolve_path(p: str | None) -> Path | None:
    """A path as given (relative to the working directory), else relative to the repository root."""
    if p is None:
        return None
    path = Path(p).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path
    return path.resolve()


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pool_np(hidden, mask):
    """Masked mean pooling + L2 normalisation (sentence-transformers' Pooling + Normalize) in numpy."""
    import numpy as np

    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    counts = np.maximum(m.sum(axis=1), 1e-9)
    mean = summed / counts
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def pool_torch(hidden, mask):
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2.0, dim=1, eps=1e-12)


def agreement(ours, reference, subset=None) -> dict:
    """crates/swap/src/eval.rs `Agreement::between`: cosine mean / min and top-10 neighbour overlap."""
    import numpy as np

    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    cos = (a * b).sum(axis=1)
    n = len(a)
    k = min(10, n - 1)
    if k <= 0:
        overlap = 1.0
    else:
        def nearest(s, i):
            sims = s @ s[i]
            order = sorted((j for j in range(n) if j != i), key=lambda j: (-sims[j], j))
            return set(order[:k])

        hits = sum(len(nearest(a, i) & nearest(b, i)) for i in range(n))
        overlap = hits / (k * n)
    idx = list(range(n)) if subset is None else list(subset)
    return {
        "cosine_mean": float(cos[idx].mean()) if idx else float("nan"),
        "cosine_min": float(cos[idx].min()) if idx else float("nan"),
        "top10_overlap": float(overlap),
    }


# --------------------------------------------------------------------------------------------- model files


class ModelInfo:
    def __init__(self, folder: Path):
        self.folder = folder
        self.config = json.loads((folder / "config.json").read_text())
        self.vocab = int(self.config["vocab_size"])
        # BERT and RoBERTa take token types; MPNet and DistilBERT have none (their configs have no type vocabulary).
        self.uses_types = "type_vocab_size" in self.config
        sbert = folder / "sentence_bert_config.json"
        max_seq = 256
        if sbert.exists():
            max_seq = int(json.loads(sbert.read_text()).get("max_seq_length") or 256)
        self.max_seq_length = min(max_seq, int(self.config.get("max_position_embeddings", max_seq)))
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json may carry its own truncation / fixed padding (all-MiniLM-L6-v2's pads to 128): use the
        # sentence-transformers settings instead, no padding, truncation to max_seq_length.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def encode(self, text: str):
        import numpy as np

        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        types = np.asarray([enc.type_ids], dtype=np.int64)
        return ids, mask, types


def cache_stamp(info: ModelInfo, calib_texts: list[str], versions: dict) -> dict:
    weights = info.folder / "model.safetensors"
    st = weights.stat()
    return {
        "format": CACHE_FORMAT,
        "model": str(info.folder),
        "weights_size": st.st_size,
        "weights_mtime_ns": st.st_mtime_ns,
        "config_sha256": hashlib.sha256((info.folder / "config.json").read_bytes()).hexdigest(),
        "max_seq_length": info.max_seq_length,
        "calib_sha256": hashlib.sha256("\n".join(calib_texts).encode()).hexdigest(),
        "versions": {k: versions.get(k) for k in ("torch", "transformers", "onnx", "onnxruntime", "openvino", "nncf")},
    }


def load_torch_model(folder: Path, attn: str | None = None):
    import torch
    from transformers import AutoModel

    kwargs = {"dtype": torch.float32}
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        model = AutoModel.from_pretrained(str(folder), add_pooling_layer=False, **kwargs)
    except TypeError:  # a model class without a pooler switch
        model = AutoModel.from_pretrained(str(folder), **kwargs)
    return model.eval()


def export_onnx(folder: Path, out: Path, seq: int, uses_types: bool) -> None:
    """fp32 ONNX: (input_ids, attention_mask[, token_type_ids]) -> last_hidden_state, dynamic batch and sequence."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    # Eager attention: the plain MatMul/Softmax pattern that ONNX Runtime's and OpenVINO's fusions recognise.
    wrapper = Encoder(load_torch_model(folder, attn="eager")).eval()
    ids = torch.full((2, seq), 1000, dtype=torch.long)
    mask = torch.ones((2, seq), dtype=torch.long)
    mask[1, seq // 2 :] = 0  # a padded row, so that the mask path cannot be traced away
    types = torch.zeros((2, seq), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"][: 3 if uses_types else 2]
    inputs = (ids, mask, types)[: len(names)]
    out.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper, inputs, str(out), input_names=names, output_names=["last_hidden_state"],
                dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False,
            )
            how = "TorchScript exporter"
        except Exception as err:  # noqa: BLE001 - fall back to the dynamo exporter
            log(f"TorchScript ONNX export failed ({type(err).__name__}: {err}); trying dynamo=True")
            for f in out.parent.iterdir():
                f.unlink()
            batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
            shapes = {n: {0: batch, 1: sequence} for n in names}
            prog = torch.onnx.export(
                wrapper, inputs, None, input_names=names, output_names=["last_hidden_state"],
                dynamic_shapes=shapes, dynamo=True, external_data=False,
            )
            prog.save(str(out))
            how = "dynamo exporter"
    import onnx

    onnx.checker.check_model(str(out))
    log(f"exported {out} ({how}, {dir_bytes(out.parent) / 1e6:.1f} MB)")


# --------------------------------------------------------------------------------------------- engines


class Variant:
    """One engine at one precision: `prepare` turns int64 numpy inputs into the engine's own, `embed` is timed."""

    engine = ""
    precision = ""
    memory_bytes = 0

    def prepare(self, ids, mask, types):
        raise NotImplementedError

    def embed(self, prepared):
        raise NotImplementedError

    def embed_np(self, ids, mask, types):
        import numpy as np

        out = self.embed(self.prepare(ids, mask, types))
        if not isinstance(out, np.ndarray):
            out = out.numpy()
        return out.astype(np.float32)


class TorchVariant(Variant):
    engine = "torch"

    def __init__(self, model, precision: str, uses_types: bool):
        import torch

        self.model = model
        self.precision = precision
        self.uses_types = uses_types
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        self.memory_bytes = buf.getbuffer().nbytes

    def prepare(self, ids, mask, types):
        import torch

        return tuple(torch.from_numpy(x) for x in (ids, mask, types))

    def embed(self, prepared):
        import torch

        ids, mask, types = prepared
        with torch.inference_mode():
            extra = {"token_type_ids": types} if self.uses_types else {}
            hidden = self.model(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
            return pool_torch(hidden, mask)


class OrtVariant(Variant):
    engine = "ort"

    def __init__(self, path: Path, precision: str, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.precision = precision
        self.memory_bytes = dir_bytes(path.parent)

    def prepare(self, ids, mask, types):
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return mask, {k: feeds[k] for k in self.inputs}

    def embed(self, prepared):
        mask, feeds = prepared
        return pool_np(self.session.run(["last_hidden_state"], feeds)[0], mask)


class OpenVinoVariant(Variant):
    engine = "openvino"

    def __init__(self, core, xml: Path, precision: str, threads: int):
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Without it the CPU plugin computes in bf16 on processors with bf16 instructions.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.precision = precision
        self.memory_bytes = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
        self.config = {k: str(self.compiled.get_property(k)) for k in config}

    def prepare(self, ids, mask, types):
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return mask, {k: feeds[k] for k in self.inputs}

    def embed(self, prepared):
        mask, feeds = prepared
        self.request.infer(feeds)
        return pool_np(self.request.get_output_tensor(0).data, mask)


# --------------------------------------------------------------------------------------------- data


def read_reference(path: Path):
    texts, embeddings = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "text" not in row or "embedding" not in row:
            raise SystemExit(f"{path} line {i + 1}: expected {{\"text\", \"embedding\"}}")
        texts.append(row["text"])
        embeddings.append(row["embedding"])
    return texts, embeddings


def calibration_texts(path: Path, target: int = 128) -> list[str]:
    """Sentences of the file, short ones (< 25 characters) joined to the previous; about `target` chunks."""
    sentences = []
    for line in path.read_text().splitlines():
        for s in re.split(r"(?<=[.!?])\s+", line.strip()):
            if not s:
                continue
            if sentences and len(s) < 25:
                sentences[-1] += " " + s
            else:
                sentences.append(s)
    # Too many: join neighbours pairwise from the start until the count fits.
    i = 0
    while len(sentences) > target and i < len(sentences) - 1:
        sentences[i : i + 2] = [sentences[i] + " " + sentences[i + 1]]
        i += 1
    return sentences


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "numpy", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------------------------- build


def build_variants(args, info: ModelInfo, vers: dict, calib: list[str]) -> list[Variant]:
    import torch

    engines = args.engines
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    stamp = cache_stamp(info, calib, vers)
    stamp_file = work / "stamp.json"
    if args.rebuild or not stamp_file.exists() or json.loads(stamp_file.read_text()) != stamp:
        for sub in ("ort-fp32", "ort-int8", "ov-fp32", "ov-int8"):
            shutil.rmtree(work / sub, ignore_errors=True)
        stamp_file.unlink(missing_ok=True)
    variants: list[Variant] = []

    if "torch" in engines:
        t0 = time.perf_counter()
        model = load_torch_model(info.folder)
        variants.append(TorchVariant(model, "fp32", info.uses_types))
        qmodel = torch.ao.quantization.quantize_dynamic(
            load_torch_model(info.folder), {torch.nn.Linear}, dtype=torch.qint8
        ).eval()
        variants.append(TorchVariant(qmodel, "int8", info.uses_types))
        log(f"torch: loaded and quantized in {time.perf_counter() - t0:.1f} s "
            f"(quantized engine {torch.backends.quantized.engine})")

    onnx_fp32 = work / "ort-fp32" / "model.onnx"
    if ("ort" in engines or "openvino" in engines) and not onnx_fp32.exists():
        t0 = time.perf_counter()
        export_onnx(info.folder, onnx_fp32, min(16, info.max_seq_length), info.uses_types)
        log(f"onnx export: {time.perf_counter() - t0:.1f} s")

    if "ort" in engines:
        onnx_int8 = work / "ort-int8" / "model.onnx"
        if not onnx_int8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            t0 = time.perf_counter()
            onnx_int8.parent.mkdir(parents=True, exist_ok=True)
            quantize_dynamic(str(onnx_fp32), str(onnx_int8), per_channel=True, weight_type=QuantType.QInt8)
            log(f"ort quantize_dynamic: {time.perf_counter() - t0:.1f} s")
        variants.append(OrtVariant(onnx_fp32, "fp32", args.threads))
        variants.append(OrtVariant(onnx_int8, "int8", args.threads))

    if "openvino" in engines:
        import openvino as ov

        core = ov.Core()
        ov_fp32 = work / "ov-fp32" / "model.xml"
        ov_int8 = work / "ov-int8" / "model.xml"
        if not ov_fp32.exists() or not ov_int8.exists():
            t0 = time.perf_counter()
            ov_model = ov.convert_model(str(onnx_fp32))
            ov_fp32.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(ov_model, str(ov_fp32), compress_to_fp16=False)
            log(f"openvino convert_model: {time.perf_counter() - t0:.1f} s")
            import nncf

            t0 = time.perf_counter()
            samples = []
            for text in calib:
                ids, mask, types = info.encode(text)
                samples.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            names = [p.get_any_name() for p in ov_model.inputs]
            samples = [{k: s[k] for k in names} for s in samples]
            with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: keep stdout for the table
                qmodel = nncf.quantize(
                    ov_model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples)
                )
            ov_int8.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(qmodel, str(ov_int8), compress_to_fp16=False)
            log(f"nncf quantize ({len(samples)} calibration texts): {time.perf_counter() - t0:.1f} s")
        variants.append(OpenVinoVariant(core, ov_fp32, "fp32", args.threads))
        variants.append(OpenVinoVariant(core, ov_int8, "int8", args.threads))
        log(f"openvino compiled with {variants[-1].config}")

    stamp_file.write_text(json.dumps(stamp, indent=1))
    return variants


# --------------------------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a Hugging Face BERT folder (config.json, model.safetensors, ...)")
    p.add_argument("--batch", type=int, default=32, help="texts per batch (default 32)")
    p.add_argument("--seq", type=int, default=128, help="tokens per text (default 128)")
    p.add_argument("--short-seq", type=int, default=16, help="tokens of the single text timed for latency")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every engine")
    p.add_argument("--iters", type=int, default=10, help="timed batches; 5x as many short texts (default 10)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of torch,ort,openvino")
    p.add_argument("--reference", help="JSON lines {text, embedding}; default: torch fp32 on minilm_corpus.txt")
    p.add_argument("--corpus", default=str(REPO / "tests/fixtures/minilm_corpus.txt"),
                   help="texts (one a line) embedded when there is no --reference")
    p.add_argument("--calib", default=str(REPO / "tests/fixtures/perplexity_text.txt"),
                   help="text whose sentences calibrate NNCF")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--work-dir", help="cached exports (default ~/.cache/qinfer/peers/<model folder name>)")
    p.add_argument("--rebuild", action="store_true", help="export and quantize again even if cached")
    p.add_argument("--no-accuracy", action="store_true", help="time only")
    p.add_argument("--pause-ms", type=float, default=5.0,
                   help="untimed sleep before each timed call, so that the previous engine's spinning worker "
                        "threads go idle (default 5; 0 disables)")
    args = p.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in args.engines if e not in ENGINES]
    if bad or not args.engines:
        p.error(f"--engines: unknown {bad}; choose from {','.join(ENGINES)}")
    if args.batch < 1 or args.iters < 1 or args.seq < 2 or args.short_seq < 2 or args.threads < 1:
        p.error("--batch, --iters and --threads must be at least 1, --seq and --short-seq at least 2")
    args.model = resolve_path(args.model)
    args.reference = resolve_path(args.reference)
    args.corpus = resolve_path(args.corpus)
    args.calib = resolve_path(args.calib)
    cache_root = Path(os.environ.get("QINFER_PEERS_CACHE", Path.home() / ".cache/qinfer/peers"))
    args.work_dir = resolve_path(args.work_dir) if args.work_dir else cache_root / args.model.name
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Before numpy / torch start their thread pools.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass

    info = ModelInfo(args.model)
    if args.seq > info.max_seq_length or args.short_seq > info.max_seq_length:
        raise SystemExit(f"--seq {args.seq} / --short-seq {args.short_seq} exceed the model's "
                         f"{info.max_seq_length} tokens")
    vers = versions()
    cpu = cpu_name()
    calib = calibration_texts(args.calib)
    log(f"model {args.model} (max_seq_length {info.max_seq_length}, vocab {info.vocab}); work dir {args.work_dir}")
    variants = build_variants(args, info, vers, calib)

    # ---- timing: exactly the rounds of crates/runner/src/bench.rs
    batch_ids = token_ids(args.batch * args.seq, info.vocab).reshape(args.batch, args.seq)
    short_ids = token_ids(args.short_seq, info.vocab).reshape(1, args.short_seq)

    def inputs(ids):
        return ids, np.ones_like(ids), np.zeros_like(ids)

    batch_in = [v.prepare(*inputs(batch_ids)) for v in variants]
    short_in = [v.prepare(*inputs(short_ids)) for v in variants]
    batch_times = [[] for _ in variants]
    short_times = [[] for _ in variants]
    pause = args.pause_ms / 1e3
    short_iters = 5 * args.iters
    log(f"timing {len(variants)} variants: {args.iters} x [{args.batch} x {args.seq}], "
        f"{short_iters} x [1 x {args.short_seq}], {args.threads} threads")
    def timed_ms(variant, inputs):
        """One call's milliseconds, after the untimed pause that lets the previous engine's threads go idle."""
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        variant.embed(inputs)
        return (time.perf_counter() - t0) * 1e3

    t_all = time.perf_counter()
    for rnd in range(short_iters + 1):
        for i, v in enumerate(variants):
            if rnd <= args.iters:
                ms = timed_ms(v, batch_in[i])
                if rnd > 0:
                    batch_times[i].append(ms)
            ms = timed_ms(v, short_in[i])
            if rnd > 0:
                short_times[i].append(ms)
        if rnd == 0:
            log(f"warm-up round done in {time.perf_counter() - t_all:.1f} s")
    log(f"timing done in {time.perf_counter() - t_all:.1f} s")

    # ---- accuracy
    rows = []
    acc = [dict() for _ in variants]
    notes = []
    if not args.no_accuracy:
        if args.reference:
            texts, ref = read_reference(args.reference)
            ref_name = str(args.reference)
        else:
            texts = [t for t in args.corpus.read_text().splitlines() if t.strip()]
            ref = None
            ref_name = f"torch fp32 embeddings of {args.corpus}"
        encoded = [info.encode(t) for t in texts]
        truncated = sum(1 for e in encoded if e[0].shape[1] >= info.max_seq_length)
        embeddings = []
        t0 = time.perf_counter()
        for v in variants:
            embeddings.append(np.concatenate([v.embed_np(*e) for e in encoded]))
        log(f"embedded {len(texts)} texts x {len(variants)} variants in {time.perf_counter() - t0:.1f} s "
            f"({truncated} truncated to {info.max_seq_length} tokens)")
        if ref is None:
            own = next((e for v, e in zip(variants, embeddings) if v.engine == "torch" and v.precision == "fp32"),
                       None)
            if own is None:
                own = np.concatenate([TorchVariant(load_torch_model(info.folder), "fp32", info.uses_types).embed_np(*e)
                                      for e in encoded])
            ref = own
        ref = np.asarray(ref, dtype=np.float32)
        if ref.shape != embeddings[0].shape:
            raise SystemExit(f"reference embeddings have shape {ref.shape}; the model gives {embeddings[0].shape}")
        calib_set = set(calib)
        calib_lines = set(args.calib.read_text().splitlines())
        held_out = [i for i, t in enumerate(texts) if t not in calib_lines and t not in calib_set]
        # Padded batch of the first 16 texts, with the attention mask, against one text at a time.
        first = encoded[:16]
        width = max(e[0].shape[1] for e in first)

        def pad(x):
            return np.pad(x, ((0, 0), (0, width - x.shape[1])))

        pids = np.concatenate([pad(e[0]) for e in first])
        pmask = np.concatenate([pad(e[1]) for e in first])
        ptypes = np.concatenate([pad(e[2]) for e in first])
        for i, v in enumerate(variants):
            acc[i] = agreement(embeddings[i], ref)
            padded = v.embed_np(pids, pmask, ptypes)
            single = embeddings[i][: len(first)]
            acc[i]["padded_batch_cosine_min"] = float((padded * single).sum(axis=1).min())
            if held_out and len(held_out) < len(texts):
                h = agreement(embeddings[i], ref, held_out)
                acc[i]["heldout_cosine_mean"] = h["cosine_mean"]
                acc[i]["heldout_cosine_min"] = h["cosine_min"]
        notes.append(f"accuracy reference: {ref_name}; {len(texts)} texts, one at a time, truncated to "
                     f"{info.max_seq_length} tokens")
        notes.append(f"NNCF calibration: {len(calib)} chunks of {args.calib}; {len(texts) - len(held_out)} of the "
                     f"{len(texts)} evaluated texts are in that file"
                     + (f" (cosine on the other {len(held_out)} below)" if len(held_out) < len(texts) else ""))

    for i, v in enumerate(variants):
        bms = median(batch_times[i])
        row = {
            "engine": v.engine,
            "precision": v.precision,
            "batch_ms": bms,
            "tokens_per_s": args.batch * args.seq / (bms / 1e3),
            "short_ms": median(short_times[i]),
            "cosine_mean": acc[i].get("cosine_mean"),
            "cosine_min": acc[i].get("cosine_min"),
            "top10_overlap": acc[i].get("top10_overlap"),
            "memory_mb": v.memory_bytes / 1e6,
            "memory_bytes": v.memory_bytes,
            "padded_batch_cosine_min": acc[i].get("padded_batch_cosine_min"),
            "heldout_cosine_mean": acc[i].get("heldout_cosine_mean"),
            "heldout_cosine_min": acc[i].get("heldout_cosine_min"),
            "model": str(args.model),
            "cpu": cpu,
            "threads": args.threads,
            "batch": args.batch,
            "seq": args.seq,
            "short_seq": args.short_seq,
            "iters": args.iters,
            "versions": vers,
        }
        rows.append(row)

    # ---- report
    def f(x, spec):
        return "-" if x is None else format(x, spec)

    print(f"{args.model} | {cpu} | {args.threads} threads")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v))
    print(f"median of {args.iters} runs of {args.batch} x {args.seq} tokens, {short_iters} runs of 1 x "
          f"{args.short_seq}")
    print()
    head = ["engine", "precision", "ms / batch", "tokens/s", f"ms 1x{args.short_seq}", "cosine mean", "cosine min",
            "top-10 overlap", "memory MB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for r in rows:
        cells = [r["engine"], r["precision"], f(r["batch_ms"], ".1f"), f(r["tokens_per_s"], ".0f"),
                 f(r["short_ms"], ".2f"), f(r["cosine_mean"], ".6f"), f(r["cosine_min"], ".6f"),
                 f(r["top10_overlap"], ".3f"), f(r["memory_mb"], ".1f")]
        print("| " + " | ".join(cells) + " |")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
        held = [r for r in rows if r["heldout_cosine_mean"] is not None and r["engine"] == "openvino"
                and r["precision"] == "int8"]
        for r in held:
            print(f"- openvino int8 on the texts not in the calibration file: cosine mean "
                  f"{r['heldout_cosine_mean']:.6f}, min {r['heldout_cosine_min']:.6f}")
        worst = min(r["padded_batch_cosine_min"] for r in rows if r["precision"] == "fp32")
        print(f"- padded batch of 16 (with attention mask) vs one at a time, fp32 rows: cosine min {worst:.7f}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
