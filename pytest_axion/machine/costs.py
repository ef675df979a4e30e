"""What a token costs: bytes read per generation step and operations per token, from the GGUF tensor table.

Generation, one step of B users at context length L (positions already cached per user):

- weights: every tensor is read once per step, whatever B, except the token embedding, of which a
  step reads only B rows, unless the model has no ``output.weight`` and reuses the embedding as its
  output matrix (tied embeddings, as SmolLM2 does): then it is read whole;
- KV cache: each user's step reads its own L cached positions of K and V in every layer:
  ``2 x n_layer x n_head_kv x head_dim x 2 bytes`` (f16, llama.cpp's default cache type) per position;
- operations: ``2 x`` the parameters of every matrix a token goes through (a multiply and an add per
  weight) plus attention, ``4 x n_layer x n_head x head_dim x L`` (scores and the weighted sum).

Prompt encoding of n tokens: ``n x 2 x`` matrix parameters plus attention over the positions before
each token (``2 x n_layer x n_head x head_dim x n^2`` in all); the weights are read once per
micro-batch of ``n_ubatch`` tokens. Arithmetic intensity, for the roofline, is operations per byte.
Pure: no engine, no numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_axion.machine.gguf import GgufInfo

KV_BYTES_PER_ELEMENT = 2   # f16, llama.cpp's default type_k / type_v
EMBEDDING = "token_embd.weight"
OUTPUT = "output.weight"


class CostsError(ValueError):
    """The GGUF lacks what the costs need (an unknown tensor type, no attention metadata)."""


@dataclass(frozen=True)
class ModelCosts:
    """Per-token costs of one model, derived from its tensor table and attention metadata."""

    step_weight_bytes: int         # weights read once per generation step (embedding rows aside)
    embedding_row_bytes: int       # one row of the token embedding (read per token when not tied)
    matrix_params: int             # parameters of the matrices one token passes through
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    tied_embedding: bool

    @property
    def kv_bytes_per_position(self) -> int:
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * KV_BYTES_PER_ELEMENT

    def gen_step_bytes(self, batch_size: int, context: float) -> float:
        """Bytes one generation step of ``batch_size`` users reads, each with ``context`` cached positions."""
        rows = 0 if self.tied_embedding else batch_size * self.embedding_row_bytes
        return self.step_weight_bytes + rows + batch_size * context * self.kv_bytes_per_position

    def gen_step_ops(self, batch_size: int, context: float) -> float:
        return batch_size * (2 * self.matrix_params + 4 * self.n_layer * self.n_head * self.head_dim * context)

    def prompt_ops(self, n_prompt: int) -> float:
        """Operations to encode one sequence's prompt of ``n_prompt`` tokens."""
        attention = 2 * self.n_layer * self.n_head * self.head_dim * n_prompt * n_prompt
        return n_prompt * 2 * self.matrix_params + attention

    def prompt_bytes(self, n_prompt: int, batch_size: int, n_ubatch: int) -> float:
        """Bytes read to encode ``batch_size`` prompts of ``n_prompt`` tokens: the weights once per micro-batch,
        the embedding rows of every token, the KV cache written."""
        tokens = n_prompt * batch_size
        micro_batches = -(-tokens // n_ubatch)
        rows = 0 if self.tied_embedding else tokens * self.embedding_row_bytes
        return micro_batches * self.step_weight_bytes + rows + tokens * self.kv_bytes_per_position

    def describe(self) -> str:
        tied = "the embedding is also the output matrix, read whole" if self.tied_embedding \
            else "a separate output matrix"
        return (f"{self.step_weight_bytes / 1e6:.1f} MB of weights per step ({tied}); "
                f"{self.matrix_params / 1e6:.1f} M matrix parameters, {2 * self.matrix_params / 1e6:.0f} MFLOP "
                f"per token before attention; KV cache {self.kv_bytes_per_position:,} bytes per position "
                f"({self.n_layer} layers x {self.n_head_kv} KV heads x {self.head_dim} x K,V x f16)")


def model_costs(info: GgufInfo) -> ModelCosts:
    """Costs from the tensor table and ``{arch}.block_count`` / ``attention.head_count(_kv)`` metadata."""
    unsized = [t.name for t in info.tensors if t.n_bytes == 0 and t.n_elements]
    if unsized:
        raise CostsError(f"{info.path}: tensor {unsized[0]} has a type the installed gguf package cannot size: "
                         "upgrade it (pip install -U gguf) to get efficiency figures")
    arch, meta = info.architecture, info.metadata

    def number(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CostsError(f"{info.path}: the GGUF has no {arch}.{key}: efficiency figures need it")
        return value

    experts = meta.get(f"{arch}.expert_count")
    if isinstance(experts, int) and experts > 1:
        raise CostsError(f"{info.path}: a mixture of {experts} experts reads only the active experts per token, "
                         "which these efficiency figures do not model yet")
    n_layer, n_embd, n_head = number("block_count"), number("embedding_length"), number("attention.head_count")
    n_head_kv = number("attention.head_count_kv", n_head)
    head_dim = number("attention.key_length", n_embd // n_head)
    names = {t.name for t in info.tensors}
    tied = OUTPUT not in names
    step_bytes, params, row_bytes = 0, 0, 0
    for tensor in info.tensors:
        if tensor.name == EMBEDDING:
            row_bytes = tensor.n_bytes // max(tensor.dims[-1], 1)
            if not tied:
                continue
        step_bytes += tensor.n_bytes
        if len(tensor.dims) >= 2:
            params += tensor.n_elements
    return ModelCosts(step_weight_bytes=step_bytes, embedding_row_bytes=row_bytes, matrix_params=params,
                      n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, tied_embedding=tied)
