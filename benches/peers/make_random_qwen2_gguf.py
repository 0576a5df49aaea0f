"""Writes a Qwen2.5-0.5B-shaped GGUF file with random weights (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocabulary 151,936, tied embeddings), its Linear weights and embeddings in Q8_0 or Q4_0, for the
decoding benchmark of ours against llama.cpp on the same file (benches/README.md).

    python benches/peers/make_random_qwen2_gguf.py OUT.gguf q8_0|q4_0

The tokenizer is a placeholder byte-level BPE of 151,936 tokens (the benchmark feeds token ids).
"""

import sys

import gguf
import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, INNER, VOCAB = 896, 24, 14, 2, 4864, 151_936
HEAD_DIM = HIDDEN // HEADS


def main() -> None:
    out, kind = sys.argv[1], sys.argv[2].lower()
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[kind]
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(out, "qwen2")
    writer.add_name("random Qwen2.5-0.5B shape")
    writer.add_context_length(4096)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INNER)
    writer.add_block_count(LAYERS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else gguf.LlamaFileType.MOSTLY_Q4_0)
    tokens = [bytes([b]).decode("latin-1") for b in range(256)] + ["ab"] + [f"tok{i}" for i in range(257, VOCAB)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * VOCAB)
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_add_bos_token(False)

    def linear(name: str, rows: int, cols: int) -> None:
        weight = rng.normal(0.0, 0.02, size=(rows, cols)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(weight, qtype), raw_dtype=qtype)

    def vector(name: str, size: int, value: float = 1.0) -> None:
        writer.add_tensor(name, np.full(size, value, dtype=np.float32) + rng.normal(0.0, 0.01, size).astype(np.float32))

    linear("token_embd.weight", VOCAB, HIDDEN)
    vector("output_norm.weight", HIDDEN)
    kv = KV_HEADS * HEAD_DIM
    for i in range(LAYERS):
        vector(f"blk.{i}.attn_norm.weight", HIDDEN)
        vector(f"blk.{i}.ffn_norm.weight", HIDDEN)
        for part, rows in (("attn_q", HIDDEN), ("attn_k", kv), ("attn_v", kv)):
            linear(f"blk.{i}.{part}.weight", rows, HIDDEN)
            vector(f"blk.{i}.{part}.bias", rows, 0.0)
        linear(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        linear(f"blk.{i}.ffn_gate.weight", INNER, HIDDEN)
        linear(f"blk.{i}.ffn_up.weight", INNER, HIDDEN)
        linear(f"blk.{i}.ffn_down.weight", HIDDEN, INNER)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(out)


if __name__ == "__main__":
    main()
