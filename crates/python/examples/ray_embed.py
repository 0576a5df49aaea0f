"""Embeds a corpus on a Ray cluster with Ray Data: one qinfer.TextEmbedding per actor, batches spread over them.

    python examples/ray_embed.py MODEL CORPUS.txt OUT.npy [--actors N] [--address ADDRESS]

On one machine Ray starts a local cluster; `--address auto` (or `ray://HEAD:10001`) joins a running multi-machine
cluster instead, where every node has `qinfer` installed and the model at the same path (or a Hub id it can
fetch). Rows come back in the corpus's order, and each text's embedding is exactly the one a single process
computes: activations are quantized per row, so a text's embedding does not depend on its batch.
"""

import argparse
import sys

import numpy as np
import ray
from ray import cloudpickle

import qinfer

# The actor class travels to the workers by value, so they need qinfer, not this file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Embed:
    """A Ray Data actor: loads the model once, then embeds each batch of texts it is given."""

    def __init__(self, model: str, threads: int):
        self.model = qinfer.TextEmbedding(model, threads=threads)

    def __call__(self, batch):
        batch["embedding"] = list(self.model.encode(list(batch["text"])))
        return batch


def embed_with_ray(model: str, texts: list, actors: int = 2, batch_size: int = 32, threads: int = 1) -> np.ndarray:
    """The embeddings of `texts` (one row each, in order), computed by `actors` actors of `threads` threads each
    on the Ray cluster this process is connected to."""
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    rows = ds.map_batches(
        Embed,
        fn_constructor_args=(model, threads),
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=threads,
    ).take_all()
    return np.stack([row["embedding"] for row in sorted(rows, key=lambda r: r["id"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("corpus", help="a text file, one text per line")
    parser.add_argument("out", help="where to save the embeddings (.npy)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="kernel threads per actor")
    parser.add_argument("--address", default=None, help="a running cluster (auto, ray://HOST:10001); default: local")
    args = parser.parse_args()
    texts = [line for line in open(args.corpus, encoding="utf-8").read().splitlines() if line.strip()]
    ray.init(address=args.address)
    embeddings = embed_with_ray(args.model, texts, args.actors, threads=args.threads)
    np.save(args.out, embeddings)
    print(f"{len(texts)} texts -> {args.out} {embeddings.shape}")


if __name__ == "__main__":
    main()
