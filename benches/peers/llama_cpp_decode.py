"""llama.cpp (llama-cpp-python, built from source with native flags) on the workload of `runner bench` for a GGUF
decoder: a prompt of 256 pseudo-random token ids, then 128 tokens decoded one at a time with the KV cache, at a
given thread count; prints prefill and decode tokens/s (median of the rounds) as JSON.

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --no-binary llama-cpp-python llama-cpp-python
    python benches/peers/llama_cpp_decode.py FILE.gguf [--threads 2] [--prompt 256] [--decode 128] [--rounds 3]
"""

import argparse
import json
import random
import statistics
import time

from llama_cpp import Llama


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    llm = Llama(
        model_path=args.model,
        n_ctx=args.prompt + args.decode + 8,
        n_batch=args.prompt,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    rng = random.Random(0)
    vocab = llm.n_vocab()
    prompt = [rng.randrange(2, vocab) for _ in range(args.prompt)]
    following = [rng.randrange(2, vocab) for _ in range(args.decode)]
    prefill, decode = [], []
    for round_ in range(args.rounds + 1):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        middle = time.perf_counter()
        for token in following:
            llm.eval([token])
        end = time.perf_counter()
        if round_ > 0:  # the first round warms up
            prefill.append(args.prompt / (middle - start))
            decode.append(args.decode / (end - middle))
    print(json.dumps({
        "engine": "llama.cpp",
        "model": args.model,
        "threads": args.threads,
        "prefill_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": statistics.median(decode),
    }))


if __name__ == "__main__":
    main()
