"""Feature definitions: which module outputs to capture and how to reduce them on the device.

Each hook feature (registered in :mod:`.hook_features`) is a :class:`FeatureDef` here. The hooks
reduce as soon as a module has run, so only per-sample vectors and scalars leave the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .encode import EncodedBatch

# Capture points: ("block", i) = output of decoder block i; ("o_proj", i) = its attention output
# projection (before the residual add); ("final", None) = post-norm last hidden state + lm_head.
Point = tuple[str, int | None]


@dataclass
class FeatureDef:
    name: str
    description: str
    columns: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    needs_answers: bool = False  # samples without answer tokens are rejected
    view: str = "full"  # "full" | "answer_only" (IFD)
    params: dict[str, Any] = field(default_factory=dict)

    def points(self, n_layers: int) -> list[Point]:
        raise NotImplementedError

    def reduce(self, point: Point, hidden: torch.Tensor, batch: EncodedBatch, out: dict[str, torch.Tensor], model) -> None:
        raise NotImplementedError


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * weights).sum(dim=1, dtype=torch.float32)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(torch.float32)
    return total / count


def _last_positions(attention: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(attention.shape[1], device=attention.device).expand_as(attention)
    return torch.where(attention, positions, torch.full_like(positions, -1)).max(dim=1).values


#: Values of the ``layer`` option of the last-layer features (an integer block index is allowed too).
LAYER_CHOICES = ("last", "penultimate", "final")


def layer_point(layer: Any, n_layers: int) -> Point:
    """The capture point a ``layer`` option names: ``"last"`` the output of the last decoder block
    (before the final norm), ``"penultimate"`` the output of the block before it, ``"final"`` the
    hidden state after the final norm (``hidden_states[-1]`` of transformers), an integer ``i``
    the output of block ``i`` (negative: counted from the end)."""
    from ..errors import ConfigError

    if layer is None or layer == "last":
        return ("block", n_layers - 1)
    if layer == "penultimate":
        return ("block", max(0, n_layers - 2))
    if layer == "final":
        return ("final", None)
    if isinstance(layer, int) and not isinstance(layer, bool) and -n_layers <= layer < n_layers:
        return ("block", layer % n_layers)
    raise ConfigError(
        f"layer={layer!r} is not one of {', '.join(LAYER_CHOICES)} or a block index in [-{n_layers}, {n_layers - 1}]"
    )


class LastBlockFeature(FeatureDef):
    """Reductions of one layer's hidden states: by default the last decoder block's output, before
    the final norm; the ``layer`` option names another (see :func:`layer_point`)."""

    default_layer = "last"

    def points(self, n_layers):
        return [layer_point(self.params.get("layer", self.default_layer), n_layers)]


class LastToken(LastBlockFeature):
    def reduce(self, point, hidden, batch, out, model):
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        out[self.arrays[0]] = hidden[rows, _last_positions(batch.attention)].float()


class MeanEmbed(LastBlockFeature):
    def reduce(self, point, hidden, batch, out, model):
        out[self.arrays[0]] = _masked_mean(hidden, batch.attention)


class FinalLastToken(LastToken):
    """The last token's hidden state after the final norm."""

    default_layer = "final"


class FinalMeanEmbed(MeanEmbed):
    """The mean over tokens of the hidden states after the final norm."""

    default_layer = "final"


class Spectrum(LastBlockFeature):
    def reduce(self, point, hidden, batch, out, model):
        from .spectrum import spectrum_stats

        sve, top_ratio = spectrum_stats(hidden, batch.attention)
        out["sve"], out["sv_top_ratio"] = sve, top_ratio


class VisualMean(FeatureDef):
    """PRISM: mean of the image tokens' hidden states at a shallow LLM layer (zeros if no image)."""

    def layer(self, n_layers: int) -> int:
        layer = self.params.get("layer")
        # Interpretation: "shallow" = 1/8 of the depth (layer 4 of 32) unless the user names one.
        return int(layer) if layer is not None else max(0, round(n_layers / 8) - 1)

    def points(self, n_layers):
        return [("block", self.layer(n_layers))]

    def reduce(self, point, hidden, batch, out, model):
        out["visual_mean"] = _masked_mean(hidden, batch.image)


def coincide_layers(n_layers: int, layers: list[int] | None = None) -> list[int]:
    """Official layers are 3, 7, 11, 15, 19 of a 24-layer model; spread proportionally otherwise."""
    if layers:
        return sorted(int(x) for x in layers)
    reference = [3, 7, 11, 15, 19]
    if n_layers == 24:
        return reference
    return sorted({min(n_layers - 1, round((x + 1) * n_layers / 24) - 1) for x in reference})


class CoincideEmbed(FeatureDef):
    """COINCIDE: per layer, o_proj output mean over image tokens and over text tokens, tanh, L2,
    concatenated and scaled by 1/sqrt(2·layers). Text tokens = non-image tokens after the first
    image token (the official range); all tokens for text-only records, whose visual half is zero."""

    def points(self, n_layers):
        return [("o_proj", i) for i in coincide_layers(n_layers, self.params.get("layers"))]

    def reduce(self, point, hidden, batch, out, model):
        first_image = torch.where(batch.image.any(dim=1), batch.image.float().argmax(dim=1), torch.zeros_like(batch.image[:, 0], dtype=torch.long))
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        text = batch.attention & ~batch.image & (positions >= first_image.unsqueeze(1))
        visual = torch.nn.functional.normalize(torch.tanh(_masked_mean(hidden, batch.image)), dim=-1)
        textual = torch.nn.functional.normalize(torch.tanh(_masked_mean(hidden, text)), dim=-1)
        out.setdefault("_coincide_parts", []).append((point[1], visual, textual))

    def finish(self, out: dict[str, torch.Tensor]) -> None:
        parts = sorted(out.pop("_coincide_parts"), key=lambda item: item[0])
        scale = 1.0 / math.sqrt(2 * len(parts))
        out["coincide_embed"] = torch.cat([torch.cat([v, t], dim=-1) for _, v, t in parts], dim=-1) * scale


class AnswerStats(FeatureDef):
    """Answer-token statistics from the logits (computed only at answer positions)."""

    def points(self, n_layers):
        return [("final", None)]

    def reduce(self, point, hidden, batch, out, model):
        stats = answer_token_stats(hidden, batch, model, want={self.stat})
        out[self.columns[0]] = stats[self.stat]


class AnswerNLL(AnswerStats):
    stat = "nll"


class EL2N(AnswerStats):
    stat = "el2n"


class AUM(AnswerStats):
    stat = "aum"


class AnswerOnlyNLL(AnswerStats):
    stat = "nll"


def answer_token_stats(hidden: torch.Tensor, batch: EncodedBatch, model, want: set[str]) -> dict[str, torch.Tensor]:
    """Per-sample mean over answer tokens of NLL, EL2N and the AUM margin.

    Token t is predicted from position t-1; only those positions go through the LM head.
    """
    targets_mask = batch.answer[:, 1:]
    rows, cols = torch.nonzero(targets_mask, as_tuple=True)
    batch_size = hidden.shape[0]
    result = {}
    if rows.numel() == 0:
        for name in want:
            result[name] = torch.full((batch_size,), float("nan"), device=hidden.device)
        result["n_answer_tokens"] = torch.zeros(batch_size, device=hidden.device)
        return result
    logits = model.lm_head(hidden[rows, cols]).float()  # predictions made at position t-1
    targets = batch.inputs["input_ids"].to(hidden.device)[rows, cols + 1]
    log_probs = torch.log_softmax(logits, dim=-1)
    counts = targets_mask.sum(dim=1).to(device=hidden.device, dtype=torch.float32)

    def per_sample(values: torch.Tensor) -> torch.Tensor:
        # Scatter into a dense (B, T) grid and sum rows: unlike index_add_ (atomic adds on CUDA), the
        # result does not depend on thread scheduling, so reruns and resumed runs are bit-identical.
        dense = torch.zeros(targets_mask.shape, dtype=values.dtype, device=values.device)
        dense[rows, cols] = values
        sums = dense.sum(dim=1)
        return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))

    target_log_probs = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    if "nll" in want:
        result["nll"] = per_sample(-target_log_probs)
    if "el2n" in want or "aum" in want:
        probs = log_probs.exp()
        if "el2n" in want:
            error = probs.clone()
            error[torch.arange(len(targets), device=error.device), targets] -= 1.0
            result["el2n"] = per_sample(error.norm(dim=-1))
        if "aum" in want:
            target_probs = target_log_probs.exp()
            others = probs.clone()
            others[torch.arange(len(targets), device=others.device), targets] = -1.0
            result["aum"] = per_sample(target_probs - others.max(dim=-1).values)
    result["n_answer_tokens"] = counts
    return result


def _make(cls, name, description, columns=(), arrays=(), **kwargs) -> Callable[..., FeatureDef]:
    def factory(**params) -> FeatureDef:
        feature = cls(name=name, description=description, columns=tuple(columns), arrays=tuple(arrays), params=params, **kwargs)
        return feature

    factory.description = description
    factory.columns = tuple(columns)
    factory.arrays = tuple(arrays)
    return factory


def _scalselect_def(**kwargs) -> FeatureDef:
    # Imported when used: that module builds on FeatureDef, defined here.
    from .scalselect_feature import ScalSelectEmbed

    return ScalSelectEmbed(**kwargs)


class TokenCount(FeatureDef):
    """Only the token count of each sample (tokenisation, no forward pass)."""

    def points(self, n_layers):
        return []


FEATURES: dict[str, Callable[..., FeatureDef]] = {
    "tokens": _make(TokenCount, "tokens", "token counts of the training-format sequence and of its answers (no forward pass)"),
    "last_token": _make(LastToken, "last_token", "last decoder block output (pre-norm) at the last non-pad token", arrays=["last_token"]),
    "mean_embed": _make(MeanEmbed, "mean_embed", "last decoder block output (pre-norm), mean over non-pad tokens", arrays=["mean_embed"]),
    "last_token_final": _make(FinalLastToken, "last_token_final", "hidden state after the final norm at the last non-pad token (SemDeDup)", arrays=["last_token_final"]),
    "mean_embed_final": _make(FinalMeanEmbed, "mean_embed_final", "hidden state after the final norm, mean over non-pad tokens (D2-Pruning)", arrays=["mean_embed_final"]),
    "spectrum": _make(Spectrum, "spectrum", "singular-value entropy and sigma_1/sum(sigma) of the last block's token matrix", columns=["sve", "sv_top_ratio"]),
    "visual_mean": _make(VisualMean, "visual_mean", "mean of the image tokens' hidden states at a shallow layer (PRISM)", arrays=["visual_mean"]),
    "coincide": _make(CoincideEmbed, "coincide", "o_proj image/text means over several layers, tanh + L2 (COINCIDE)", arrays=["coincide_embed"]),
    "answer_nll": _make(AnswerNLL, "answer_nll", "mean NLL of the answer tokens (perplexity = exp)", columns=["answer_nll"], needs_answers=True),
    "el2n": _make(EL2N, "el2n", "mean L2 norm of softmax - onehot over answer tokens", columns=["el2n"], needs_answers=True),
    "aum": _make(AUM, "aum", "mean margin p(target) - max other p over answer tokens", columns=["aum"], needs_answers=True),
    "ifd": _make(AnswerOnlyNLL, "ifd", "mean NLL of the answer tokens without the instruction (for IFD)", columns=["answer_nll_noinstr"], needs_answers=True, view="answer_only"),
    "scalselect": _make(_scalselect_def, "scalselect", "layer-0 output at the vision tokens holding 90% of the instruction's layer-0 attention, mean-pooled (ScalSelect)",
                        columns=["scalselect_vision_tokens", "scalselect_kept_tokens", "scalselect_query_tokens"], arrays=["scalselect_embed"]),
}


def make_features(names: list[str], params: dict[str, dict[str, Any]] | None = None) -> list[FeatureDef]:
    from ..errors import ConfigError

    params = params or {}
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown feature(s) {unknown}; known: {', '.join(FEATURES)}")
    return [FEATURES[name](**params.get(name, {})) for name in dict.fromkeys(names)]
