"""Scale-out on Ray Data (examples/ray_embed.py): a corpus embedded by `map_batches`, one TextEmbedding per
actor on a local cluster, gives exactly the embeddings of a single process."""

import pathlib
import sys

import numpy as np
import ray

import qinfer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from ray_embed import embed_with_ray  # noqa: E402


def test_ray_data_actors_give_the_embeddings_of_one_process(minilm, corpus):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        got = embed_with_ray(minilm, corpus, actors=2, batch_size=16)
    finally:
        ray.shutdown()
    want = qinfer.TextEmbedding(minilm).encode(corpus)
    assert got.shape == want.shape == (len(corpus), 384)
    assert np.array_equal(got, want)
