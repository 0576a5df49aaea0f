#!/usr/bin/env python3
"""Ours beside OpenVINO in back-to-back pairs: the speed figures of the BERT acceptance bars in one command.

A pair is one `runner bench` process (fp32, the default int8 plan, and `w8a8-row` smoothed by a plan file),
then one `benches/peers/run --engines openvino --no-accuracy` process, on the same model, workload and threads.
The machine's speed drifts between runs (up to 1.5x on a shared VM), so each figure is a ratio within one pair,
and the table gives the median of the pairs' ratios with their range:

- fp32: our tokens/s over OpenVINO fp32's (bar 1.0x);
- default int8: ours over OpenVINO int8's (bar 1.0x);
- `w8a8-row` smoothed: ours over OpenVINO int8's (bar 1.3x, for the fastest scheme at least as accurate as
  OpenVINO's int8: accuracy is not measured here; see `runner eval` and `benches/peers/run --reference`);
- one short text, int8: OpenVINO's ms over ours (bar 1.0x: no slower).

    benches/peers/sitting.py [--model DIR]... [--pairs 4] [--threads 2] [--iters 10] [--runner PATH] [--json OUT]

Uses only the standard library; the peers' environment is `benches/peers/run`'s own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The smoothed row-wise plan the benches README times beside the presets.
ROW_PLAN = 'default = "w8a8-row"\nembeddings = "int8-g32"\nsmooth = 0.5\n'

# (label, ours row, OpenVINO precision, bar, whether the figure is OpenVINO's time over ours)
FIGURES = [
    ("fp32", "fp32", "fp32", 1.0, False),
    ("default int8", "int8", "int8", 1.0, False),
    ("w8a8-row smoothed", "plan", "int8", 1.3, False),
    ("one short text, int8", "int8", "int8", 1.0, True),
]


def log(msg: str) -> None:
    print(f"[sitting] {msg}", file=sys.stderr, flush=True)


def run_json(cmd: list[str]) -> str:
    log(" ".join(cmd))
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with status {done.returncode}")
    return done.stdout


def ours(args, model: Path, plan: Path) -> tuple[dict, dict]:
    """One `runner bench` process: its rows by kind (fp32, int8, plan) and its machine line."""
    out = run_json([str(args.runner), "bench", "--model", str(model), "--threads", str(args.threads), "--quant",
                    "fp32,int8", "--plan", str(plan), "--no-baseline", "--iters", str(args.iters), "--json"])
    report = json.loads(out)
    rows = {}
    for row in report["results"]:
        kind = "plan" if row["name"].startswith("plan ") else row["name"]
        rows[kind] = row
    return rows, report["machine"]


def openvino(args, model: Path, out: Path) -> dict:
    """One `benches/peers/run` process with OpenVINO alone: its rows by precision."""
    run_json([str(REPO / "benches/peers/run"), "--model", str(model), "--threads", str(args.threads), "--engines",
              "openvino", "--no-accuracy", "--iters", str(args.iters), "--json", str(out)])
    return {row["precision"]: row for row in json.loads(out.read_text())}


def ratio(ours_row: dict, peer_row: dict, inverse: bool) -> float:
    if inverse:
        return peer_row["short_ms"] / ours_row["short_ms"]
    return ours_row["tokens_per_s"] / peer_row["tokens_per_s"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", type=Path,
                   help="a BERT model folder (repeatable); default models/cache/all-MiniLM-L6-v2")
    p.add_argument("--pairs", type=int, default=4, help="pairs of processes per model (default 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10, help="timed batches per process, ours and OpenVINO's")
    p.add_argument("--runner", type=Path, default=REPO / "target/release/runner")
    p.add_argument("--json", type=Path, help="also write every pair's rows and the medians here")
    args = p.parse_args(argv)
    models = args.model or [REPO / "models/cache/all-MiniLM-L6-v2"]
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    if not args.runner.exists():
        raise SystemExit(f"{args.runner} does not exist: cargo build --release -p runner")

    report = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "row_s05.toml"
        plan.write_text(ROW_PLAN)
        for model in models:
            pairs = []
            machine = None
            for i in range(args.pairs):
                log(f"{model.name}: pair {i + 1} of {args.pairs}")
                rows, machine = ours(args, model, plan)
                peer = openvino(args, model, Path(tmp) / "openvino.json")
                pairs.append({"ours": rows, "openvino": peer})
            report.append({"model": str(model), "machine": machine, "pairs": pairs})

    print(f"| model | figure | bar | median of {args.pairs} pairs | range | met |")
    print("|---|---|---:|---:|---:|---|")
    for entry in report:
        entry["medians"] = {}
        for label, ours_kind, precision, bar, inverse in FIGURES:
            values = [ratio(pair["ours"][ours_kind], pair["openvino"][precision], inverse) for pair in entry["pairs"]]
            mid = statistics.median(values)
            entry["medians"][label] = mid
            print(f"| {Path(entry['model']).name} | {label} | {bar:.1f}x | {mid:.2f}x | {min(values):.2f}-"
                  f"{max(values):.2f} | {'yes' if mid >= bar else 'no'} |")
    machine = report[0]["machine"]
    print(f"\nCPU: {machine.get('cpu')}; kernel level {machine.get('isa')}; {args.threads} threads; "
          f"{args.iters} batches per process")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
