"""qinfer.Generator against `runner generate`: the same text for the same seed, whole or streamed."""

import json

import qinfer
from conftest import runner

PROMPT = "The capital of France is"


def runner_text(model, *options):
    return json.loads(runner("generate", "--model", model, "--prompt", PROMPT, "--json", *options))["text"]


def test_seeded_and_greedy_text_is_that_of_runner_generate(smollm2):
    generator = qinfer.Generator(smollm2)
    seeded = generator.generate(PROMPT, max_tokens=16, temperature=0.8, top_p=0.9, seed=7)
    assert seeded == runner_text(smollm2, "--max-tokens", "16", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7")
    greedy = generator.generate(PROMPT, max_tokens=12, temperature=0)
    assert greedy == runner_text(smollm2, "--max-tokens", "12", "--temperature", "0")
    assert generator.context_length > 0 and len(generator.plan) > 0


def test_a_stream_yields_the_same_text_piece_by_piece(smollm2):
    generator = qinfer.Generator(smollm2)
    pieces = list(generator.stream(PROMPT, max_tokens=16, seed=3))
    assert len(pieces) > 1
    assert "".join(pieces) == generator.generate(PROMPT, max_tokens=16, seed=3)
    # A stream dropped half way stops its generation; the generator goes on serving.
    stream = generator.stream(PROMPT, max_tokens=64, seed=3)
    next(stream)
    del stream
    assert generator.generate(PROMPT, max_tokens=4, temperature=0)
