"""qinfer.Reranker against `runner rerank`: the same scores and the same order."""

import numpy as np
import pytest

import qinfer
from conftest import runner_json_lines

QUERY = "What is the capital of France?"
DOCUMENTS = ["Paris is the capital of France.", "Berlin is big.", "The Seine flows through Paris.", "Cats sleep."]


def test_scores_are_those_of_runner_rerank(reranker_model):
    got = qinfer.Reranker(reranker_model).rerank(QUERY, DOCUMENTS)
    want = runner_json_lines("rerank", "--model", reranker_model, "--query", QUERY, *DOCUMENTS)
    # runner prints the shortest decimal of each f32, which reads back as the same f32.
    f32 = np.float32
    assert [(r["index"], f32(r["score"])) for r in got] == [(w["index"], f32(w["score"])) for w in want]
    raw = runner_json_lines("rerank", "--model", reranker_model, "--query", QUERY, "--raw-scores", *DOCUMENTS)
    assert [f32(r["raw_score"]) for r in got] == [f32(w["score"]) for w in raw]
    assert [r["document"] for r in got] == [DOCUMENTS[r["index"]] for r in got]


def test_top_n_keeps_the_best(reranker_model):
    reranker = qinfer.Reranker(reranker_model)
    everything = reranker.rerank(QUERY, DOCUMENTS)
    assert reranker.rerank(QUERY, DOCUMENTS, top_n=2) == everything[:2]
    with pytest.raises(ValueError, match="query is empty"):
        reranker.rerank(" ", DOCUMENTS)
    with pytest.raises(ValueError, match="documents is empty"):
        reranker.rerank(QUERY, [])
    assert len(reranker.plan) > 0 and reranker.max_seq_length > 0
