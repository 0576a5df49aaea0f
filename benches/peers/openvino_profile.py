"""OpenVINO's own time per operation type for one `runner bench`-shaped batch.

Compiles a model that `benches/peers/run` saved (its `ov-int8/model.xml` or `ov-fp32/model.xml`) with the same
settings as the benchmark plus `PERF_COUNT = YES`, runs 3 warm-up and 5 timed batches of random token ids, and prints
the mean time of each (operation type, kernel) pair per batch, largest first.

    ~/.cache/qinfer/peers-venv/bin/python benches/peers/openvino_profile.py \
        ~/.cache/qinfer/peers/all-MiniLM-L6-v2/ov-int8/model.xml [--threads 2] [--batch 32] [--seq 128]
"""

import argparse
import collections
import time

import numpy as np
import openvino as ov


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    config = {
        "INFERENCE_NUM_THREADS": args.threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "PERF_COUNT": "YES",
    }
    compiled = ov.Core().compile_model(args.xml, "CPU", config)
    request = compiled.create_infer_request()
    ids = np.random.default_rng(0).integers(1000, 20000, size=(args.batch, args.seq)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {k: feeds[k] for k in (p.get_any_name() for p in compiled.inputs)}
    for _ in range(3):
        request.infer(feeds)
    per_op = collections.Counter()
    wall = []
    for _ in range(args.runs):
        start = time.perf_counter()
        request.infer(feeds)
        wall.append(time.perf_counter() - start)
        for info in request.get_profiling_info():
            per_op[(info.node_type, info.exec_type)] += info.real_time.total_seconds() * 1e3 / args.runs
    total = sum(per_op.values())
    print(f"wall ms per batch (median of {args.runs}): {sorted(wall)[args.runs // 2] * 1e3:.1f}")
    print(f"sum of operations: {total:.1f} ms")
    for (node, kernel), ms in per_op.most_common():
        if ms >= 0.01:
            print(f"{ms:8.2f} ms {100 * ms / total:5.1f}%  {node} ({kernel})")


if __name__ == "__main__":
    main()
