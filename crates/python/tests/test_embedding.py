"""qinfer.TextEmbedding against `runner embed`: the same floats, bit for bit, in sentence-transformers' shapes."""

import numpy as np
import pytest

import qinfer
from conftest import runner_json_lines


def runner_embeddings(model, texts, *options):
    lines = runner_json_lines("embed", "--model", model, *options, stdin="\n".join(texts) + "\n")
    return np.array([line["embedding"] for line in lines], dtype=np.float32)


def test_a_list_gives_rows_and_a_string_a_vector(minilm):
    model = qinfer.TextEmbedding(minilm)
    rows = model.encode(["hi"])
    assert rows.shape == (1, 384) and rows.dtype == np.float32
    one = model.encode("hi")
    assert one.shape == (384,)
    assert np.array_equal(one, rows[0])
    assert (model.dimensions, model.max_seq_length) == (384, 256)


@pytest.mark.parametrize("quant", ["int8", "fp32", "w8a8-row"])
def test_embeddings_are_those_of_runner_embed_bit_for_bit(minilm, corpus, quant):
    texts = corpus[:40]
    got = qinfer.TextEmbedding(minilm, quant=quant).encode(texts, batch_size=7)
    want = runner_embeddings(minilm, texts, "--quant", quant)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{quant}: largest difference {np.abs(got - want).max()}"


def test_normalize_false_gives_the_pooled_vectors(minilm, corpus):
    model = qinfer.TextEmbedding(minilm)
    pooled = model.encode(corpus[:5], normalize=False)
    norms = np.linalg.norm(pooled, axis=1)
    assert not np.allclose(norms, 1.0)
    unit = model.encode(corpus[:5])
    assert np.allclose(pooled / norms[:, None], unit, atol=1e-6)


def test_the_plan_says_which_layer_got_which_scheme(minilm, tmp_path):
    model = qinfer.TextEmbedding(minilm)
    plan = model.plan
    # Six layers of four Linear groups (Q, K and V run as one).
    assert len(plan) == 24, plan
    assert plan["encoder.layer.0.attention.self.{query,key,value}"] == "w8a8-b64-pb"
    fp32 = qinfer.TextEmbedding(minilm, quant="fp32")
    assert set(fp32.plan.values()) == {"f32"}
    # A plan file and a dict of the same shape give the same model.
    path = tmp_path / "plan.toml"
    path.write_text('default = "w8a8-row"\n')
    from_file = qinfer.TextEmbedding(minilm, plan=path)
    from_dict = qinfer.TextEmbedding(minilm, plan={"default": "w8a8-row"})
    assert set(from_file.plan.values()) == {"w8a8-row"}
    text = ["A plan from a file."]
    assert np.array_equal(from_file.encode(text), from_dict.encode(text))
    assert from_file.parameter_bytes > 0
