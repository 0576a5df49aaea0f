"""Times qinfer.TextEmbedding.encode on runner bench's batch shape (32 texts of 128 tokens), for the comparison in
benches/README.md: `python benches/python/encode_batch.py SCHEME ROUNDS` beside `runner bench --batch 32 --seq 128`.
"""

import statistics, sys, time
import qinfer
model = qinfer.TextEmbedding("models/cache/all-MiniLM-L6-v2", quant=sys.argv[1], threads=2)
# 126 word pieces + [CLS] + [SEP] = 128 tokens per text, 32 texts: runner bench's batch shape.
words = "the quick brown fox jumps over a lazy dog while rain falls on green hills".split()
texts = [" ".join(words[(i + j) % len(words)] for j in range(126)) for i in range(32)]
model.encode(texts)
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter(); model.encode(texts, batch_size=32); times.append(time.perf_counter() - start)
ms = statistics.median(times) * 1e3
print(f"python {sys.argv[1]}: {ms:.1f} ms per 32 x 128 batch, {32 * 128 / ms * 1e3:.0f} tokens/s")
