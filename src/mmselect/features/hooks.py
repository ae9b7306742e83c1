"""Forward hooks on the decoder: capture points, and one forward pass that reduces on the device.

Capture points: ``("block", i)`` = output of decoder block i; ``("o_proj", i)`` = its attention
output projection (before the residual add); ``("final", None)`` = post-norm last hidden state +
LM head. The pass stops after the last hooked layer when nothing reads the final state.
A feature with an ``attach(layers, batch, out, model)`` method also installs what it needs inside a
module for the pass (ScalSelect wraps one layer's attention); it returns handles to ``remove()``.
"""

from __future__ import annotations

from typing import Any

import torch

from .encode import EncodedBatch
from .reducers import FeatureDef, answer_token_stats


class StopForward(Exception):
    """Raised by the last hook needed, so layers nobody reads are not run."""


def decoder_layers(model) -> torch.nn.ModuleList:
    for path in ("model.language_model.layers", "language_model.model.layers", "language_model.layers", "model.layers"):
        module = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.ModuleList):
            return module
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and hasattr(decoder, "layers"):
        return decoder.layers
    raise RuntimeError(f"cannot find the decoder layers of {type(model).__name__}")


def module_for(layers, point) -> torch.nn.Module:
    kind, index = point
    if kind == "block":
        return layers[index]
    if kind == "o_proj":
        attention = getattr(layers[index], "self_attn", None)
        if attention is None or not hasattr(attention, "o_proj"):
            raise RuntimeError(f"layer {index} has no self_attn.o_proj")
        return attention.o_proj
    raise ValueError(point)


def hooked_forward(model, layers, features: list[FeatureDef], batch: EncodedBatch) -> dict[str, torch.Tensor]:
    """One forward pass of ``batch`` (already on the device) with every feature's hooks attached;
    returns the reduced per-sample tensors by output name."""
    n_layers = len(layers)
    out: dict[str, Any] = {}
    handles = []
    by_point: dict[tuple, list[FeatureDef]] = {}
    for feature in features:
        for point in feature.points(n_layers):
            by_point.setdefault(tuple(point), []).append(feature)
    needs_final = ("final", None) in by_point
    hooked = [p for p in by_point if p[0] != "final"]
    last_point = max(hooked, key=lambda p: (p[1], p[0] == "block")) if hooked else None

    def make_hook(point):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            for feature in by_point[point]:
                feature.reduce(point, hidden, batch, out, model)
            if not needs_final and point == last_point:
                raise StopForward

        return hook

    for point in hooked:
        handles.append(module_for(layers, point).register_forward_hook(make_hook(point)))
    try:
        for feature in features:
            attach = getattr(feature, "attach", None)
            if attach is not None:
                handles.extend(attach(layers, batch, out, model))
        with torch.inference_mode():
            inner = getattr(model, "model", None)
            try:
                if not by_point:  # token counts only: no forward pass needed
                    raise StopForward
                if inner is not None and hasattr(model, "lm_head"):
                    result = inner(**batch.inputs, use_cache=False)
                    final_hidden = result.last_hidden_state
                else:  # pragma: no cover - architectures without the usual split
                    result = model(**batch.inputs, output_hidden_states=True, use_cache=False)
                    final_hidden = result.hidden_states[-1]
            except StopForward:
                final_hidden = None
            if needs_final:
                final_features = by_point[("final", None)]
                stat_features = [f for f in final_features if hasattr(f, "stat")]
                if stat_features:
                    stats = answer_token_stats(final_hidden, batch, model, {f.stat for f in stat_features})
                    for feature in stat_features:
                        out[feature.columns[0]] = stats[feature.stat]
                    out["n_answer_tokens"] = stats["n_answer_tokens"]
                for feature in final_features:  # hidden-state reductions after the final norm
                    if not hasattr(feature, "stat"):
                        feature.reduce(("final", None), final_hidden, batch, out, model)
    finally:
        for handle in handles:
            handle.remove()
    for feature in features:
        finish = getattr(feature, "finish", None)
        if finish is not None:
            finish(out)
    return out


__all__ = ["StopForward", "decoder_layers", "hooked_forward", "module_for"]
