"""qinfer: a quantized inference engine (sentence embeddings, rerankers, small LLMs) for the CPU.

Every call into the engine releases the GIL and runs under its model's thread count, so Python threads (and
several models) run at once. Bad arguments raise ValueError, a missing model or plan file FileNotFoundError,
anything the engine refuses or fails at RuntimeError.
"""

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

PlanLike = Union[str, "os.PathLike[str]", Dict[str, Any]]

class TextEmbedding:
    """A sentence-embedding model (BERT, RoBERTa, XLM-R, DistilBERT, MPNet, ModernBERT, Qwen3 embedders...)."""

    def __init__(
        self,
        model: str,
        quant: Optional[str] = "int8",
        plan: Optional[PlanLike] = None,
        threads: Optional[int] = None,
    ) -> None:
        """Loads `model` (a folder in Hugging Face layout or a Hub id `owner/name[@revision]`), quantized per
        `quant` ("int8": the architecture's default plan; "fp32"; a scheme such as "w8a8-row"; None: a
        pre-quantized checkpoint as saved) or `plan` (a plan file, TOML or JSON, or a dict in its shape; it
        replaces `quant`), with `threads` kernel threads (None: all cores)."""
    def encode(
        self,
        texts: Union[str, Sequence[str]],
        batch_size: int = 32,
        normalize: Optional[bool] = None,
        prompt_name: Optional[str] = None,
    ) -> npt.NDArray[np.float32]:
        """Embeds `texts`: a list gives a 2-D float32 array (one row per text), one string a 1-D array, as
        sentence-transformers' `encode` does. `normalize` None follows the model's pipeline; `prompt_name` names
        one of the model's prompts (None: its default prompt, if any). Texts over `max_seq_length` tokens are
        cut. Raises ValueError for an empty list, a non-string item or an empty text."""
    @property
    def dimensions(self) -> int:
        """Width of the embeddings."""
    @property
    def max_seq_length(self) -> int:
        """Tokens per text; longer texts are cut."""
    @property
    def plan(self) -> Dict[str, str]:
        """Which scheme each Linear layer got, {layer: scheme}."""
    @property
    def parameter_bytes(self) -> int:
        """Bytes of the model's parameters in memory."""

class Reranker:
    """A cross-encoder reranker (BertForSequenceClassification, XLMRobertaForSequenceClassification)."""

    def __init__(
        self,
        model: str,
        quant: Optional[str] = "int8",
        plan: Optional[PlanLike] = None,
        threads: Optional[int] = None,
    ) -> None:
        """Loads `model` as TextEmbedding does."""
    def rerank(self, query: str, documents: Sequence[str], top_n: Optional[int] = None) -> List[Dict[str, Any]]:
        """The best `top_n` documents (default all), best first, as {"index", "score", "raw_score",
        "document"}: `score` is the relevance in (0, 1), the sigmoid of the model's `raw_score`."""
    @property
    def max_seq_length(self) -> int:
        """Tokens per (query, document) pair; longer pairs are cut."""
    @property
    def plan(self) -> Dict[str, str]:
        """Which scheme each Linear layer got, {layer: scheme}."""

class TextStream(Iterator[str]):
    """The text pieces of one generation, as the model produces them."""

    def __iter__(self) -> "TextStream": ...
    def __next__(self) -> str: ...

class Generator:
    """A decoder LLM (Llama, Qwen2, Qwen3 families) from a GGUF file, a Hugging Face folder or a Hub id."""

    def __init__(
        self,
        model: str,
        quant: Optional[str] = None,
        plan: Optional[PlanLike] = None,
        threads: Optional[int] = None,
    ) -> None:
        """Loads `model` quantized per `quant` (None: a GGUF's own blocks, a float folder in int8, a checkpoint
        as saved; "int8", "int4", "int2", "fp32" or a scheme) or `plan`."""
    def generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: Optional[int] = None,
        chat: bool = False,
        system: Optional[str] = None,
        ignore_eos: bool = False,
    ) -> str:
        """Up to `max_tokens` tokens after `prompt` (with `chat`, the user's message in the model's chat
        template, after `system`). `temperature` 0 is greedy; otherwise the same `seed` gives the same text, as
        `runner generate --seed` does. Stops at the end-of-sequence token unless `ignore_eos`."""
    def stream(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: Optional[int] = None,
        chat: bool = False,
        system: Optional[str] = None,
        ignore_eos: bool = False,
    ) -> TextStream:
        """`generate` as an iterator of text pieces, each yielded as soon as it is produced."""
    @property
    def plan(self) -> Dict[str, str]:
        """Which scheme each Linear layer got, {layer: scheme}."""
    @property
    def context_length(self) -> int:
        """The model's context in tokens (prompt and answer)."""

def quantize(
    model: str,
    out: Union[str, "os.PathLike[str]"],
    quant: Optional[str] = None,
    plan: Optional[PlanLike] = None,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Writes a pre-quantized checkpoint of the float `model` into the folder `out` per `quant` or `plan`
    (default: the model's "int8" preset); returns {"plan", "layers", "source_bytes", "saved_bytes"}."""

def inspect(
    model: str,
    schemes: Optional[Sequence[str]] = None,
    calibration: Optional[Union[str, Sequence[str]]] = None,
    layers: Optional[str] = None,
    weights_only: bool = False,
    threads: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Each layer's sensitivity to each candidate scheme (default: those of `runner inspect`), measured on
    `calibration` (texts, default 48 built-in sentences): one dict per layer with its shape and a "results" list
    (scheme, weight error, and unless `weights_only` the whole model's loss with that layer alone quantized)."""
