"""Hook outputs against ``output_hidden_states`` and the model's own loss, on the tiny models."""

import weakref

import numpy as np
import pytest
import torch

from mmselect.data import read_dataset
from mmselect.features.encode import encode, load_image
from mmselect.features.extract import decoder_layers, extract_features
from mmselect.features.reducers import coincide_layers


@pytest.fixture(scope="module")
def samples(mini_data, mini_images):
    ds = read_dataset(mini_data, image_root=mini_images)
    picked = [s for s in ds.samples if s.n_images == 1][:3]
    picked += [s for s in ds.samples if s.n_images == 0 and s.rounds > 1][:2]
    picked += [s for s in ds.samples if s.n_images == 2][:1]
    assert len(picked) == 6
    return picked


def _reference(bundle, samples):
    """Hidden states and per-sample answer NLL from a plain forward with labels."""
    rendered = [bundle.template.render([s]) for s in samples]
    images = [[load_image(p) for p in r.image_paths] for r in rendered]
    batch = encode(bundle, rendered, images, 2048).to(bundle.device)
    with torch.no_grad():
        out = bundle.model(**batch.inputs, output_hidden_states=True)
    logits = out.logits[:, :-1].float()
    targets = batch.inputs["input_ids"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    mask = batch.answer[:, 1:].float()
    answer_nll = (nll * mask).sum(1) / mask.sum(1)
    return batch, out.hidden_states, answer_nll.cpu().numpy()


@pytest.mark.parametrize("which", ["tiny_llava", "tiny_qwen", "tiny_qwen25", "tiny_onevision"])
def test_hooks_match_hidden_states_and_loss(which, samples, request, tmp_path):
    bundle = request.getfixturevalue(which)
    names = ["last_token", "mean_embed", "visual_mean", "coincide", "answer_nll", "spectrum"]
    fs, rejected = extract_features(samples, bundle, names, cache_dir=tmp_path, batch_size=4, progress=False)
    assert rejected == [] and list(fs.keys) == [s.key for s in samples]
    batch, hidden, answer_nll = _reference(bundle, samples)
    n_layers = len(decoder_layers(bundle.model))
    norm = bundle.model.model.language_model.norm
    attention, image = batch.attention, batch.image
    last = attention.long().cumsum(1).argmax(1)
    for row in range(len(samples)):
        # hidden_states[-1] is after the final norm: our pre-norm row, normed, must equal it.
        ours = torch.from_numpy(fs.array("last_token")[row]).to(bundle.device)
        assert torch.allclose(norm(ours[None])[0], hidden[-1][row, last[row]], atol=1e-4)
        # visual_mean reads block (L/8 - 1) = hidden_states[layer + 1], mean over image tokens.
        layer = max(0, round(n_layers / 8) - 1)
        if image[row].any():
            expected = hidden[layer + 1][row][image[row]].mean(0)
            assert np.allclose(fs.array("visual_mean")[row], expected.cpu().numpy(), atol=1e-5)
        else:
            assert not fs.array("visual_mean")[row].any()
    assert np.allclose(fs.column("answer_nll"), answer_nll, atol=1e-4)
    assert list(fs.column("n_tokens")) == attention.sum(1).tolist()
    # COINCIDE embedding: unit norm for image samples (2 * layers halves of norm 1/sqrt(2L) each).
    norms = np.linalg.norm(fs.array("coincide_embed"), axis=1)
    has_image = fs.column("n_images") > 0
    assert np.allclose(norms[has_image], 1.0, atol=1e-5)
    assert fs.array("coincide_embed").shape[1] == 2 * len(coincide_layers(n_layers)) * hidden[0].shape[-1]
    assert np.isfinite(fs.column("sve")).all() and (fs.column("sv_top_ratio") <= 1).all()


def test_answer_mask_covers_exactly_the_answers(tiny_llava, samples):
    for sample in samples:
        rendered = tiny_llava.template.render([sample])
        batch = encode(tiny_llava, [rendered], [[load_image(p) for p in rendered.image_paths]], 2048)
        ids = batch.inputs["input_ids"][0][batch.answer[0]]
        decoded = tiny_llava.tokenizer.decode(ids)
        # Each answer and its turn-end </s>, as in LLaVA's training loss.
        answers = "".join(t.text + "</s>" for t in sample.turns if t.role == "assistant")
        assert decoded.replace(" ", "") == answers.replace(" ", "")
        # Image tokens are where the processor put them, one run per image.
        assert int(batch.image.sum()) == 16 * sample.n_images


def test_coincide_layers_follow_the_official_ratio():
    assert coincide_layers(24) == [3, 7, 11, 15, 19]
    assert coincide_layers(32) == [4, 10, 15, 20, 26]  # (i + 1) * 32 / 24 - 1, rounded
    assert coincide_layers(32, [1, 2]) == [1, 2]


def test_max_length_defaults_to_the_models_context(tiny_llava, tiny_qwen):
    from mmselect.features.extract import Extractor

    assert Extractor(tiny_llava, []).max_length == 2048  # the tiny LLaVA's max_position_embeddings
    assert Extractor(tiny_qwen, []).max_length == 4096
    assert Extractor(tiny_qwen, [], max_length=70).max_length == 70


def test_truncation_rejects_only_samples_whose_image_does_not_fit(tiny_llava, samples, tmp_path):
    fs, rejected = extract_features(samples, tiny_llava, ["answer_nll"], cache_dir=tmp_path, batch_size=6, max_length=70, progress=False)
    reasons = {r["key"]: r["reason"] for r in rejected}
    assert set(fs.keys) | set(reasons) == {s.key for s in samples}
    assert fs.n and reasons and all(n <= 70 for n in fs.column("n_tokens"))
    assert all("max_length=70" in reason for reason in reasons.values())


@pytest.mark.parametrize("max_length", [2048, 70])
def test_prefetching_batches_changes_nothing(tiny_qwen, samples, tmp_path, max_length):
    """Preparing batches ahead in a thread gives the same rows, values and rejections, in order,
    also when a batch has to be split because some of its samples cannot be encoded."""
    names = ["last_token", "answer_nll", "ifd"]
    runs = [extract_features(samples, tiny_qwen, names, cache_dir=tmp_path / f"p{depth}", batch_size=2,
                             max_length=max_length, progress=False, prefetch=depth) for depth in (0, 2)]
    (plain, plain_rejected), (ahead, ahead_rejected) = runs
    assert plain_rejected == ahead_rejected and list(plain.keys) == list(ahead.keys)
    assert bool(plain_rejected) == (max_length == 70) and plain.n > 0
    assert np.array_equal(plain.array("last_token"), ahead.array("last_token"))
    for column in ("answer_nll", "answer_nll_noinstr", "n_tokens"):
        assert np.array_equal(plain.column(column), ahead.column(column), equal_nan=True)


def test_a_batch_of_one_that_cannot_be_encoded_is_rejected_not_fatal(tiny_llava, samples, tmp_path):
    fs, rejected = extract_features(samples, tiny_llava, ["answer_nll"], cache_dir=tmp_path, batch_size=1, max_length=24, progress=False)
    reasons = {r["key"]: r["reason"] for r in rejected}
    assert set(fs.keys) | set(reasons) == {s.key for s in samples}
    image_keys = {s.key for s in samples if s.n_images}
    assert image_keys and all("image tokens extend past max_length=24" in reasons[k] for k in image_keys)


def test_out_of_memory_splits_the_batch_and_rejects_only_what_never_fits(tiny_llava, samples, tmp_path, monkeypatch):
    from mmselect.features.extract import Extractor

    names = ["last_token", "answer_nll"]
    plain, _ = extract_features(samples, tiny_llava, names, cache_dir=tmp_path / "plain", batch_size=6, progress=False)
    longest = int(plain.column("n_tokens").max())
    calls, failed_passes = [], []
    original = Extractor._forward

    def forward_with_small_memory(self, batch):
        calls.append(batch.batch_size)
        # The retry must not start while the failed pass's tensors are still referenced (by the
        # exception's traceback): on a GPU they would fill the memory the retry needs.
        assert all(ref() is None for ref in failed_passes)
        # Two samples at most fit; the longest sample never does.
        if batch.batch_size > 2 or int(batch.attention.sum(1).max()) >= longest:
            activations = torch.ones(4)
            failed_passes.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("simulated")
        return original(self, batch)

    monkeypatch.setattr(Extractor, "_forward", forward_with_small_memory)
    fs, rejected = extract_features(samples, tiny_llava, names, cache_dir=tmp_path / "small", batch_size=6, progress=False)
    too_big = [k for k, n in zip(plain.keys, plain.column("n_tokens")) if n == longest]
    assert [r["key"] for r in rejected] == too_big and "out of device memory" in rejected[0]["reason"]
    assert calls[0] == 6 and 3 in calls and 1 in calls  # halved, then down to the single sample
    kept = [i for i, k in enumerate(plain.keys) if k not in too_big]
    assert list(fs.keys) == [plain.keys[i] for i in kept]
    assert np.allclose(fs.column("answer_nll"), plain.column("answer_nll")[kept], atol=1e-5)
    assert np.allclose(fs.array("last_token"), plain.array("last_token")[kept], atol=1e-4)


def test_prefetched_keeps_order_and_bounds_the_lookahead():
    from mmselect.features.extract import prefetched

    started = []

    def prepare(item):
        started.append(item)
        return item * 10

    results = []
    for ready in prefetched(list(range(7)), prepare, depth=2):
        results.append(ready)
        assert len(started) <= len(results) + 2  # never more than `depth` prepared ahead
    assert results == [i * 10 for i in range(7)] and started == list(range(7))


def test_one_shot_stage_scores_the_query_after_its_demonstration(tiny_llava, samples, tmp_path):
    from mmselect.methods.clipper import clipper_pairs

    picked = samples[:4]
    fs, _ = extract_features(picked, tiny_llava, ["clipper"], feature_params={"clipper": {"m": 1, "seed": 3}},
                             cache_dir=tmp_path, batch_size=2, progress=False)
    query_idx, demo_idx = clipper_pairs(4, [s.task for s in picked], m=1, pairing="random", seed=3)
    gains: dict[int, list[float]] = {}
    for q, d in zip(query_idx, demo_idx):
        rendered = tiny_llava.template.render([picked[d], picked[q]], label=[False, True])
        batch = encode(tiny_llava, [rendered], [[load_image(p) for p in rendered.image_paths]], 2048).to(tiny_llava.device)
        # Only the query's answers are scored; the demonstration's are context.
        assert int(batch.answer.sum()) < int(encode(tiny_llava, [tiny_llava.template.render([picked[d], picked[q]])],
                                                        [[load_image(p) for p in rendered.image_paths]], 2048).answer.sum())
        with torch.no_grad():
            logits = tiny_llava.model(**batch.inputs).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, batch.inputs["input_ids"][0, 1:], reduction="none")
        expected = float(nll[batch.answer[0, 1:]].mean())
        assert abs(fs.column("icl_answer_nll")[q] - expected) < 1e-4
        gains.setdefault(int(d), []).append(fs.column("answer_nll")[q] - expected)
    for d in range(4):
        if d in gains:
            assert abs(fs.column("demo_gain")[d] - np.mean(gains[d])) < 1e-4
        else:
            assert np.isnan(fs.column("demo_gain")[d])
