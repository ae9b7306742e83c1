"""ScalSelect's instruction-attended visual representation (step A of the method, feature ``scalselect``).

Per sample, in the main model's pass (spec: ``methods/scalselect.md`` §1, official
``feature_extract_sft.py``):

1. the attention probabilities of decoder layer 0 (all keys in the softmax denominator, causal,
   padding masked), averaged over every query head, summed over the query rows ``U`` and read at
   the vision columns ``V``: a score ``a_j`` per vision token;
2. ``p = a / sum(a)`` (uniform when the sum is 0), sorted in descending order (ties keep position
   order); keep the smallest top set whose cumulative mass is strictly greater than ``mass`` (0.9);
3. the mean, accumulated in float32, of layer 0's *output* hidden states (the residual stream before
   any norm, ``hidden_states[1]`` of transformers) at the kept tokens.

Token sets. ``V``: the image tokens, plus ``<|vision_start|>``/``<|vision_end|>`` where the model
has them (Qwen2-VL, Qwen2.5-VL), as the official code counts them. ``U`` with ``query="official"``:
every non-padding, non-vision token except the assistant answers' content (each answer's stripped
text; its turn-end marker and the newline after it stay queries, as do BOS, the system prompt and
the role tags), the official definition. The official code finds answers by matching their token
sequence and silently leaves an answer unmarked when the tokens differ in context; here answers come
from the template's character spans, so every answer is excluded. ``query="user_text"``: only the
tokens of the user turns' text.

Route (spec §A.4, option 2). Layer 0 runs with the model's own attention implementation (sdpa,
flash, eager), wrapped: the wrapper receives the query and key states exactly as the attention
function gets them -- after the projections, any q/k norm and the family's own rotary embedding
(M-RoPE for Qwen2-VL), computed by the model's code, so nothing of the family is re-implemented --
and recomputes the softmax rows of the query tokens from them in float32, a chunk of query rows at a
time, never an L x L matrix per head. Grouped-query keys are shared by their head group without
being copied. Only that layer's module uses the wrapper (its config is a copy naming it), for the
duration of the pass. With only this feature, the forward stops after layer 0.

Samples without vision tokens (text-only) are kept with a row of zeros and
``scalselect_vision_tokens == 0``; the method leaves them out (the official pipeline drops them).
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .encode import EncodedBatch
from .reducers import FeatureDef, _masked_mean

QUERY_SETS = ("official", "user_text")
DEFAULT_MASS = 0.9
DEFAULT_LAYER = 0
#: Name of the wrapping attention function in transformers' attention registry.
CAPTURE_IMPLEMENTATION = "mmselect_scalselect_capture"
#: Elements of one chunk of attention probabilities (batch x heads x rows x keys, float32): 128 MB.
CHUNK_ELEMENTS = 1 << 25
_COLUMNS_KEY = "_scalselect_columns"


def vision_mask(batch: EncodedBatch, model) -> torch.Tensor:
    """The vision positions ``V`` of each row: image tokens, plus the vision delimiters of models
    that have them (Qwen2-VL family), without padding."""
    vision = batch.image.clone()
    ids = batch.inputs["input_ids"].to(vision.device)
    config = getattr(model, "config", None)
    for name in ("vision_start_token_id", "vision_end_token_id"):
        token_id = getattr(config, name, None)
        if token_id is not None:
            vision |= ids == int(token_id)
    return vision & batch.attention


def query_mask(batch: EncodedBatch, vision: torch.Tensor, query: str) -> torch.Tensor:
    """The query positions ``U`` of each row (see the module docstring for the two definitions)."""
    if batch.answer_content is None or batch.user_text is None:
        raise RuntimeError("the batch has no answer-content/user-text masks (encode() computes them)")
    if query == "official":
        return batch.attention & ~vision & ~batch.answer_content
    if query == "user_text":
        return batch.attention & ~vision & batch.user_text
    raise ConfigError(f"scalselect query={query!r} is not one of {', '.join(QUERY_SETS)}")


def attention_column_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    keys_valid: torch.Tensor,
    query_rows: torch.Tensor,
    *,
    scaling: float,
    sliding_window: int | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """``sum over query rows u of mean over heads of softmax(q_u k^T * scaling)``, per key column.

    ``query`` (B, H, L, d) and ``key`` (B, H_kv, L, d) as the attention function receives them
    (rotary applied; H a multiple of H_kv, query head h reading key head h // (H / H_kv));
    ``keys_valid`` (B, L) the non-padding tokens; ``query_rows`` (B, L) the rows summed. The softmax
    runs over every allowed key (causal, not padding, within ``sliding_window`` if set), in float32.
    Returns (B, L) float32. Memory: one chunk of rows (``chunk_elements`` probabilities) at a time.
    """
    batch_size, heads, length, head_dim = query.shape
    kv_heads = key.shape[1]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not share {kv_heads} key heads evenly")
    groups = heads // kv_heads
    queries = query.float().reshape(batch_size, kv_heads, groups, length, head_dim)
    keys_t = key.float().transpose(-1, -2).unsqueeze(2)  # (B, H_kv, 1, d, L): shared by the group
    # The query rows of each sample first, in position order, padded to the longest set.
    counts = query_rows.sum(dim=1)
    n_rows = int(counts.max()) if batch_size else 0
    row_order = torch.argsort((~query_rows).to(torch.int8), dim=1, stable=True)[:, :n_rows]
    key_positions = torch.arange(length, device=query.device)
    total = torch.zeros(batch_size, length, dtype=torch.float32, device=query.device)
    chunk = max(1, chunk_elements // max(1, batch_size * heads * length))
    for start in range(0, n_rows, chunk):
        rows = row_order[:, start : start + chunk]  # (B, c) positions
        used = (torch.arange(start, start + rows.shape[1], device=query.device).unsqueeze(0) < counts.unsqueeze(1))
        index = rows[:, None, None, :, None].expand(batch_size, kv_heads, groups, rows.shape[1], head_dim)
        scores = torch.matmul(torch.gather(queries, 3, index), keys_t) * scaling  # (B, H_kv, G, c, L)
        allowed = keys_valid[:, None, :] & (key_positions[None, None, :] <= rows[:, :, None])
        if sliding_window is not None:
            allowed &= key_positions[None, None, :] > rows[:, :, None] - int(sliding_window)
        scores.masked_fill_(~allowed[:, None, None], float("-inf"))
        head_mean = torch.softmax(scores, dim=-1).mean(dim=(1, 2))  # (B, c, L)
        total += torch.where(used[:, :, None], head_mean, torch.zeros((), device=query.device)).sum(dim=1)
    return total


def kept_vision_tokens(column_mass: torch.Tensor, vision: torch.Tensor, mass: float) -> torch.Tensor:
    """The vision tokens kept, as a (B, L) mask: per row, the vision scores are normalised to a
    distribution ``p`` (uniform when they sum to 0), sorted in descending order (equal scores keep
    position order), and the first ``m`` kept, ``m`` the smallest count whose cumulative ``p`` is
    strictly greater than ``mass`` (all of them if rounding keeps every prefix at or below it),
    at least 1. Rows without vision tokens keep none."""
    scores = torch.where(vision, column_mass.float(), torch.zeros((), device=column_mass.device))
    n_vision = vision.sum(dim=1, keepdim=True)
    total = scores.sum(dim=1, keepdim=True)
    uniform = vision.float() / n_vision.clamp(min=1)
    p = torch.where(total > 0, scores / torch.where(total > 0, total, torch.ones_like(total)), uniform)
    # Non-vision positions sort after every vision token and are never counted.
    ranked, order = torch.sort(torch.where(vision, p, torch.full_like(p, -1.0)), dim=1, descending=True, stable=True)
    rank = torch.arange(p.shape[1], device=p.device).unsqueeze(0)
    in_vision = rank < n_vision
    cumulative = torch.cumsum(torch.where(in_vision, ranked, torch.zeros_like(ranked)), dim=1)
    # cumulative is non-decreasing: the first prefix above the mass is one past those at or below it.
    m = ((cumulative <= mass) & in_vision).sum(dim=1, keepdim=True) + 1
    m = torch.minimum(m, n_vision).clamp(min=1)
    kept_sorted = (rank < m) & in_vision
    return torch.zeros_like(vision).scatter(1, order, kept_sorted)


class _Capture:
    """Layer ``index``'s attention module calls :func:`_capturing_attention` while attached: its
    config is a copy naming the wrapper; the original config comes back on :meth:`remove`."""

    def __init__(self, attention: torch.nn.Module, compute):
        self.attention = attention
        self.config = attention.config
        self.implementation = attention.config._attn_implementation
        self.compute = compute
        wrapped = copy.copy(self.config)
        wrapped._attn_implementation_internal = CAPTURE_IMPLEMENTATION
        attention.config = wrapped
        attention._scalselect_capture = self

    def remove(self) -> None:
        self.attention.config = self.config
        self.attention.__dict__.pop("_scalselect_capture", None)


def _capturing_attention(module, query, key, value, attention_mask, **kwargs):
    """The attention function of the captured layer: hands q/k to the feature, then runs the
    model's own implementation unchanged."""
    capture = module.__dict__.get("_scalselect_capture")
    if capture is not None:
        capture.compute(module, query, key, kwargs)
        implementation = capture.implementation
    else:  # the config copy outlived the pass: behave like eager
        implementation = "eager"
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = importlib.import_module(type(module).__module__).eager_attention_forward
    original = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager)
    return original(module, query, key, value, attention_mask, **kwargs)


def _register_capture() -> None:
    from transformers import AttentionInterface

    if CAPTURE_IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capturing_attention)


@dataclass
class ScalSelectEmbed(FeatureDef):
    """Feature ``scalselect``: options ``query`` (``official`` | ``user_text``), ``mass`` (0.9) and
    ``layer`` (0, the decoder layer whose attention and output are read)."""

    def __post_init__(self):
        query = self.params.get("query", "official")
        if query not in QUERY_SETS:
            raise ConfigError(f"scalselect query={query!r} is not one of {', '.join(QUERY_SETS)}")
        mass = self.params.get("mass", DEFAULT_MASS)
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0.0 <= float(mass) <= 1.0:
            raise ConfigError(f"scalselect mass={mass!r} is not a number in [0, 1]")
        layer = self.params.get("layer", DEFAULT_LAYER)
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ConfigError(f"scalselect layer={layer!r} is not a decoder layer index")
        self.query, self.mass, self.layer_option = query, float(mass), layer

    def layer(self, n_layers: int) -> int:
        if not -n_layers <= self.layer_option < n_layers:
            raise ConfigError(f"scalselect layer={self.layer_option} is not in [-{n_layers}, {n_layers - 1}]")
        return self.layer_option % n_layers

    def points(self, n_layers):
        return [("block", self.layer(n_layers))]

    def attach(self, layers, batch: EncodedBatch, out: dict[str, Any], model) -> list:
        """Wrap the attention of the layer read, for one pass; returns the handle that unwraps it."""
        _register_capture()
        attention = layers[self.layer(len(layers))].self_attn
        vision = vision_mask(batch, model)
        queries = query_mask(batch, vision, self.query)

        def compute(module, query, key, kwargs):
            if kwargs.get("softcap") is not None:
                raise NotImplementedError("scalselect: attention logit soft-capping is not supported")
            scaling = kwargs.get("scaling")
            out[_COLUMNS_KEY] = attention_column_mass(
                query, key, batch.attention.to(query.device), queries.to(query.device),
                scaling=float(scaling) if scaling is not None else query.shape[-1] ** -0.5,
                sliding_window=kwargs.get("sliding_window"),
            )

        out["_scalselect_sets"] = (vision, queries)
        return [_Capture(attention, compute)]

    def reduce(self, point, hidden, batch, out, model):
        vision, queries = (t.to(hidden.device) for t in out.pop("_scalselect_sets"))
        column_mass = out.pop(_COLUMNS_KEY).to(hidden.device)
        kept = kept_vision_tokens(column_mass, vision, self.mass)
        out["scalselect_embed"] = _masked_mean(hidden, kept)  # zeros where nothing is kept (no vision)
        out["scalselect_vision_tokens"] = vision.sum(dim=1)
        out["scalselect_kept_tokens"] = kept.sum(dim=1)
        out["scalselect_query_tokens"] = queries.sum(dim=1)


__all__ = [
    "CAPTURE_IMPLEMENTATION",
    "QUERY_SETS",
    "ScalSelectEmbed",
    "attention_column_mass",
    "kept_vision_tokens",
    "query_mask",
    "vision_mask",
]
