#!/usr/bin/env python3
"""Writes a random-weight BERT of bert-base shape as a Hugging Face folder that qinfer and the peers load.

config.json (BertConfig: hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30522, 512 positions, gelu,
model_type "bert", architectures ["BertModel"]), model.safetensors (f32, transformers' default initialisation
under torch.manual_seed(0), names `embeddings.word_embeddings.weight`, `encoder.layer.0...`, `pooler.dense...`),
and the tokenizer and sentence-transformers files of a source folder (all-MiniLM-L6-v2 by default), so that the
same tokenizer and mean pooling apply.

Usage: benches/peers/run --make-random-bert OUT_DIR [--source models/cache/all-MiniLM-L6-v2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COPIED = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder to write (created; files in it are replaced)")
    p.add_argument("--source", default=str(REPO / "models/cache/all-MiniLM-L6-v2"),
                   help="folder whose tokenizer / sentence-transformers files are copied")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    source = Path(args.source)
    if not source.is_absolute() and not source.exists() and (REPO / source).exists():
        source = REPO / source
    if not (source / "tokenizer.json").exists():
        raise SystemExit(f"{source} has no tokenizer.json")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )
    torch.manual_seed(args.seed)
    model = BertModel(config).eval()  # post_init: normal(0, 0.02) weights, zero biases, unit LayerNorm
    # Written by hand, not save_pretrained: every tensor f32, contiguous, under its plain BertModel name.
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)
    cfg = config.to_dict()
    cfg["model_type"] = "bert"
    cfg["architectures"] = ["BertModel"]
    cfg["torch_dtype"] = "float32"
    cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    copied = []
    for name in COPIED:
        src = source / name
        if src.exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / name)
            copied.append(name)
    # 1_Pooling/config.json carries the embedding width: make it this model's.
    pooling = out / "1_Pooling/config.json"
    if pooling.exists():
        pc = json.loads(pooling.read_text())
        pc["word_embedding_dimension"] = config.hidden_size
        pooling.write_text(json.dumps(pc, indent=2) + "\n")

    # Check that what was written loads back identically.
    back = load_file(str(out / "model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    params = sum(v.numel() for v in state.values())
    print(f"wrote {out}: {len(state)} tensors, {params / 1e6:.1f} M parameters, "
          f"{(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB; copied {', '.join(copied)} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
