"""qinfer.quantize and qinfer.inspect: a checkpoint that loads as saved, and the sensitivity table."""

import numpy as np

import qinfer


def test_a_quantized_checkpoint_embeds_as_the_model_it_came_from(minilm, tmp_path, corpus):
    out = tmp_path / "minilm-int8"
    report = qinfer.quantize(minilm, out)
    assert report["saved_bytes"] < report["source_bytes"] and len(report["layers"]) == 24
    saved = qinfer.TextEmbedding(str(out), quant=None)
    texts = corpus[:8]
    assert np.array_equal(saved.encode(texts), qinfer.TextEmbedding(minilm).encode(texts))
    assert saved.plan == qinfer.TextEmbedding(minilm).plan


def test_inspect_measures_every_layer_under_every_scheme(minilm):
    table = qinfer.inspect(minilm, schemes=["w8a8-row", "int4-g32"], layers="encoder.layer.0.*", calibration=["A cat.", "A dog."])
    parts = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
    parts += ["intermediate.dense", "output.dense"]
    assert sorted(row["name"] for row in table) == sorted(f"encoder.layer.0.{part}" for part in parts)
    for row in table:
        assert [r["candidate"] for r in row["results"]] == ["w8a8-row", "int4-g32"]
        losses = [r["loss"] for r in row["results"]]
        assert all(loss >= 0 for loss in losses)
