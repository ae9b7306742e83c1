"""The ``scalselect`` feature (ScalSelect step A) against the obvious computation: the tiny models
run alone per sample with eager attention, ``attentions[0]`` and ``hidden_states[1]`` reduced in
plain torch, the answer tokens found the official way (token-sequence match)."""

import numpy as np
import pytest
import torch

from mmselect.data import read_dataset
from mmselect.data.records import Sample, Turn
from mmselect.errors import ConfigError
from mmselect.features.encode import encode, load_image
from mmselect.features.extract import extract_features
from mmselect.features.hooks import decoder_layers
from mmselect.features.reducers import make_features
from mmselect.features.scalselect_feature import (
    attention_column_mass,
    kept_vision_tokens,
)

MODELS = ["tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava-onevision"]
FIXTURES = {"tiny-llava": "tiny_llava", "tiny-qwen2-vl": "tiny_qwen", "tiny-qwen2.5-vl": "tiny_qwen25",
            "tiny-llava-onevision": "tiny_onevision"}


@pytest.fixture(scope="module")
def samples(mini_data, mini_images):
    """One batch with padding: two single-turn image records, a multi-turn one, a two-image one
    and a text-only one (all of different lengths)."""
    ds = read_dataset(mini_data, image_root=mini_images)
    pick = [s for s in ds.samples if s.n_images == 1 and s.rounds == 1][:2]
    pick += [s for s in ds.samples if s.n_images == 1 and s.rounds == 3][:1]
    pick += [s for s in ds.samples if s.n_images == 2][:1]
    pick += [s for s in ds.samples if s.n_images == 0][:1]
    return pick


def _match_positions(ids: list[int], pieces: list[list[list[int]]]) -> set[int]:
    """The official marking: each piece's tokens at their first exact match after the previous
    one. Each piece lists token forms to try (byte-level BPE glues the preceding space to the
    first word, so the spaced form is tried after the plain one)."""
    marked, cursor = set(), 0
    for forms in pieces:
        for form in forms:
            found = next((i for i in range(cursor, len(ids) - len(form) + 1) if ids[i : i + len(form)] == form), None)
            if found is not None:
                marked.update(range(found, found + len(form)))
                cursor = found + len(form)
                break
        else:
            raise AssertionError(f"piece {forms[0]} not found in the sequence")
    return marked


def _forms(tokenizer, text: str) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer(" " + text, add_special_tokens=False)["input_ids"]]


def reference(bundle, eager_model, sample, query: str, mass: float = 0.9):
    """(embedding, N_v, m, n_u) of one sample, the slow way: one unpadded eager forward."""
    tokenizer = bundle.tokenizer
    rendered = bundle.template.render([sample])
    batch = encode(bundle, [rendered], [[load_image(p) for p in rendered.image_paths]], 4096).to(bundle.device)
    with torch.no_grad():
        out = eager_model(**batch.inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    ids = batch.inputs["input_ids"][0].tolist()
    vocab = tokenizer.get_vocab()
    vision_ids = {vocab[t] for t in ("<image>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>") if t in vocab}
    vision = [i for i, t in enumerate(ids) if t in vision_ids]
    if query == "official":  # every non-vision token but the answers' stripped text
        answers = [_forms(tokenizer, t.text.strip()) for t in sample.turns if t.role == "assistant"]
        marked = _match_positions(ids, answers)
        queries = [i for i in range(len(ids)) if i not in marked and ids[i] not in vision_ids]
    else:  # the user turns' text (placeholders out), non-vision
        texts = [t.text.replace("<image>", "").strip() for t in sample.turns if t.role == "user"]
        marked = _match_positions(ids, [_forms(tokenizer, t) for t in texts if t])
        queries = sorted(i for i in marked if ids[i] not in vision_ids)
    hidden = out.hidden_states[1][0].float()
    if not vision:
        return np.zeros(hidden.shape[-1], np.float32), 0, 0, len(queries)
    head_mean = out.attentions[0][0].float().mean(dim=0)  # (L, L)
    scores = head_mean[queries][:, vision].mean(dim=0)
    p = scores / scores.sum() if scores.sum() > 0 else torch.full_like(scores, 1 / len(vision))
    order = torch.sort(p, descending=True, stable=True).indices
    cumulative = torch.cumsum(p[order], dim=0)
    above = [j for j in range(len(vision)) if cumulative[j] > mass]
    m = min(max(above[0] + 1 if above else len(vision), 1), len(vision))
    kept = [vision[j] for j in order[:m].tolist()]
    return hidden[kept].mean(dim=0).cpu().numpy(), len(vision), m, len(queries)


@pytest.fixture(scope="module")
def eager_models():
    """Each tiny model loaded again with eager attention (which returns the weights), on demand."""
    from mmselect.models.registry import load_model

    loaded = {}

    def get(name, device):
        if name not in loaded:
            loaded[name] = load_model(name, device=str(device), attn_implementation="eager").model
        return loaded[name]

    return get


@pytest.mark.parametrize("query", ["official", "user_text"])
@pytest.mark.parametrize("name", MODELS)
def test_matches_eager_attentions(name, query, samples, eager_models, request, tmp_path):
    bundle = request.getfixturevalue(FIXTURES[name])  # the default (sdpa) model: layer 0 is wrapped
    params = {"scalselect": {"query": query}} if query != "official" else None
    fs, rejected = extract_features(samples, bundle, ["scalselect"], feature_params=params, cache_dir=tmp_path,
                                    batch_size=len(samples), progress=False)
    assert rejected == [] and list(fs.keys) == [s.key for s in samples]  # text-only kept
    eager = eager_models(name, bundle.device)
    expected = [reference(bundle, eager, s, query) for s in samples]
    np.testing.assert_allclose(fs.array("scalselect_embed"), np.stack([e[0] for e in expected]), rtol=1e-4, atol=1e-5)
    for column, at in (("scalselect_vision_tokens", 1), ("scalselect_kept_tokens", 2), ("scalselect_query_tokens", 3)):
        assert fs.column(column).dtype == np.int64
        assert fs.column(column).tolist() == [e[at] for e in expected], column
    vision, kept = fs.column("scalselect_vision_tokens"), fs.column("scalselect_kept_tokens")
    assert vision[-1] == 0 and kept[-1] == 0 and not fs.array("scalselect_embed")[-1].any()  # text-only
    assert ((kept >= 1) & (kept < vision))[:-1].all()  # 90% of the mass: some tokens, not all


def test_user_text_is_a_smaller_query_set(samples, tiny_qwen, tmp_path):
    official, _ = extract_features(samples, tiny_qwen, ["scalselect"], cache_dir=tmp_path / "a", batch_size=5,
                                   progress=False)
    user, _ = extract_features(samples, tiny_qwen, ["scalselect"], feature_params={"scalselect": {"query": "user_text"}},
                               cache_dir=tmp_path / "b", batch_size=5, progress=False)
    assert (user.column("scalselect_query_tokens") < official.column("scalselect_query_tokens")).all()
    assert (user.column("scalselect_vision_tokens") == official.column("scalselect_vision_tokens")).all()
    image_rows = official.column("scalselect_vision_tokens") > 0
    assert not np.allclose(user.array("scalselect_embed")[image_rows], official.array("scalselect_embed")[image_rows])


def _kept(scores, mass, vision=None):
    scores = torch.tensor([scores], dtype=torch.float32)
    vision = torch.ones_like(scores, dtype=torch.bool) if vision is None else torch.tensor([vision])
    return kept_vision_tokens(scores, vision, mass)[0].nonzero().flatten().tolist()


def test_token_rule_worked_by_hand():
    # p = (.5, .25, .25): cumulative .5, .75, 1 -> strictly above .75 needs all three, above .7 two
    assert _kept([2.0, 1.0, 1.0], 0.75) == [0, 1, 2]
    assert _kept([2.0, 1.0, 1.0], 0.7) == [0, 1]
    # sorted descending: (3, 1) of 4 -> p = (.75, .25); above .9 needs both, the zeros never
    assert _kept([1.0, 3.0, 0.0, 0.0], 0.9) == [0, 1]
    assert _kept([1.0, 3.0, 0.0, 0.0], 0.5) == [1]
    # a zero sum is uniform: .25 each; above .5 needs three, equal scores kept in position order
    assert _kept([0.0, 0.0, 0.0, 0.0], 0.5) == [0, 1, 2]
    assert _kept([0.0, 0.0, 0.0, 0.0], 0.9) == [0, 1, 2, 3]
    # ties at the boundary: p = (.2, .4, .2, .2), cumulative .4, .6, .8 -> three kept, the later tie not
    assert _kept([1.0, 2.0, 1.0, 1.0], 0.7) == [0, 1, 2]
    # mass 1: every token (the official ablation); mass 0: the top one
    assert _kept([4.0, 3.0, 2.0, 1.0], 1.0) == [0, 1, 2, 3]
    assert _kept([4.0, 3.0, 2.0, 1.0], 0.0) == [0]
    # only vision positions count, wherever they are; none -> nothing
    assert _kept([9.0, 1.0, 9.0, 3.0], 0.7, [False, True, False, True]) == [3]
    assert _kept([9.0, 1.0], 0.9, [False, False]) == []


@pytest.mark.parametrize("sliding_window", [None, 3])
def test_column_mass_against_dense_softmax(sliding_window):
    generator = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, length, dim = 2, 6, 2, 9, 4
    query = torch.randn(batch, heads, length, dim, generator=generator)
    key = torch.randn(batch, kv_heads, length, dim, generator=generator)
    valid = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])  # the second row is padded
    rows = torch.tensor([[0, 1, 0, 1, 1, 0, 1, 1, 0], [1, 0, 0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    expected = torch.zeros(batch, length)
    for b in range(batch):
        k = key[b].repeat_interleave(heads // kv_heads, dim=0)  # query head h reads key head h // 3
        scores = query[b] @ k.transpose(-1, -2) * 0.3
        i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        allowed = (j <= i) & valid[b][None, :]
        if sliding_window:
            allowed &= j > i - sliding_window
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).mean(dim=0)
        expected[b] = probs[rows[b]].sum(dim=0)
    for chunk_elements in (1, 100, 1 << 20):  # one row at a time, a few, all
        got = attention_column_mass(query, key, valid, rows, scaling=0.3, sliding_window=sliding_window,
                                    chunk_elements=chunk_elements)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_forward_stops_after_layer_zero_and_unwraps(samples, tiny_llava, tmp_path):
    layers = decoder_layers(tiny_llava.model)
    calls = []
    handle = layers[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        extract_features(samples, tiny_llava, ["scalselect"], cache_dir=tmp_path / "alone", batch_size=5, progress=False)
        assert calls == []
        extract_features(samples, tiny_llava, ["scalselect", "last_token"], cache_dir=tmp_path / "both", batch_size=5,
                         progress=False)
        assert calls  # another feature reads the last layer: the pass goes on
    finally:
        handle.remove()
    # the wrapped attention config is gone after the pass
    assert layers[0].self_attn.config is layers[1].self_attn.config
    assert layers[0].self_attn.config._attn_implementation == "sdpa"


def test_layer_option_reads_another_layer(samples, tiny_llava, tmp_path):
    zero, _ = extract_features(samples, tiny_llava, ["scalselect"], cache_dir=tmp_path / "a", batch_size=5, progress=False)
    one, _ = extract_features(samples, tiny_llava, ["scalselect"], feature_params={"scalselect": {"layer": 1}},
                              cache_dir=tmp_path / "b", batch_size=5, progress=False)
    assert not np.allclose(zero.array("scalselect_embed"), one.array("scalselect_embed"))


@pytest.mark.parametrize("params", [{"query": "users"}, {"mass": 1.5}, {"mass": "high"}, {"layer": "first"}])
def test_bad_options(params):
    with pytest.raises(ConfigError, match="scalselect"):
        make_features(["scalselect"], {"scalselect": params})


def test_rendered_answer_content_and_user_text(samples, tiny_qwen):
    from mmselect.models.chat_template import ProcessorChatTemplate
    from mmselect.models.templates import TEMPLATES

    multi = samples[2]
    answers = [t.text.strip() for t in multi.turns if t.role == "assistant"]
    questions = [t.text.replace("<image>", "").strip() for t in multi.turns if t.role == "user"]
    assert len(answers) == 3
    for template in (TEMPLATES["vicuna_v1"], TEMPLATES["qwen2_vl"], TEMPLATES["chatml_image"],
                     ProcessorChatTemplate(tiny_qwen.processor)):
        rendered = template.render([multi])
        assert [rendered.text[s:e] for s, e in rendered.content_spans] == answers, template.name
        assert [rendered.text[s:e] for s, e in rendered.user_spans] == questions, template.name
    # Qwen2-VL keeps images in place: the words between them are the user text, each piece stripped
    two = Sample(position=0, key="two", record={}, images=["a.png", "b.png"], task="t",
                 turns=[Turn("user", "Left <image> versus right <image>: which?"), Turn("assistant", " The left one. ")])
    for template in (TEMPLATES["qwen2_vl"], ProcessorChatTemplate(tiny_qwen.processor)):
        rendered = template.render([two])
        assert [rendered.text[s:e] for s, e in rendered.user_spans] == ["Left", "versus right", ": which?"]
        assert [rendered.text[s:e] for s, e in rendered.content_spans] == ["The left one."]


def test_same_under_eager_attention(samples, tiny_qwen, tmp_path):
    """The wrapper runs the model's own implementation after it: eager as well as sdpa."""
    from mmselect.models.registry import load_model

    eager = load_model("tiny-qwen2-vl", device=str(tiny_qwen.device), attn_implementation="eager")
    assert decoder_layers(eager.model)[0].self_attn.config._attn_implementation == "eager"
    runs = [extract_features(samples, bundle, ["scalselect", "last_token"], cache_dir=tmp_path / str(i), batch_size=5,
                             progress=False)[0] for i, bundle in enumerate((tiny_qwen, eager))]
    for name in ("scalselect_embed", "last_token"):
        np.testing.assert_allclose(runs[0].array(name), runs[1].array(name), rtol=1e-4, atol=1e-5)
    assert runs[0].column("scalselect_kept_tokens").tolist() == runs[1].column("scalselect_kept_tokens").tolist()
    # the wrapped layer's output is the model's own: the last layer reads the same without the feature
    plain, _ = extract_features(samples, tiny_qwen, ["last_token"], cache_dir=tmp_path / "plain", batch_size=5,
                                progress=False)
    np.testing.assert_array_equal(plain.array("last_token"), runs[0].array("last_token"))
