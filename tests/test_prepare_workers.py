"""Batch preparation in worker processes: the same features, bit for bit, as preparing in this
process; order kept; resume unchanged."""

import numpy as np
import pytest
import torch

from mmselect.data import read_dataset
from mmselect.data.records import Sample
from mmselect.features.extract import extract_features
from mmselect.features.extractor import Extractor
from mmselect.features.prepare_pool import BatchPreparer, default_workers
from mmselect.features.reducers import make_features

# Features of both views (answer_only: IFD), hook reductions at several layers, the LM head.
FEATURES = ["tokens", "last_token", "mean_embed", "visual_mean", "coincide", "spectrum", "answer_nll", "ifd"]


@pytest.fixture(scope="module")
def mini_samples(mini_data, mini_images):
    samples = read_dataset(mini_data, image_root=mini_images).samples
    with_images = [s for s in samples if s.n_images == 1][:14]
    text_only = [s for s in samples if s.n_images == 0][:6]
    several = [s for s in samples if s.n_images > 1][:2]
    broken = [s for s in samples if s.n_images == 1][14:15]
    # One sample whose image is missing: rejected with the same reason either way.
    missing = [Sample(s.position, s.key, s.record, s.turns, s.images, s.task, s.id, [str(s.image_paths[0]) + ".missing"])
               for s in broken]
    return with_images[:7] + text_only + several + missing + with_images[7:]


def _extract(bundle, samples, cache, num_workers):
    return extract_features(samples, bundle, FEATURES, cache_dir=cache, batch_size=4, shard_size=10,
                            progress=False, num_workers=num_workers)


def test_two_workers_give_bit_identical_features(tiny_llava, mini_samples, tmp_path):
    alone, rejected_alone = _extract(tiny_llava, mini_samples, tmp_path / "w0", 0)
    pooled, rejected_pooled = _extract(tiny_llava, mini_samples, tmp_path / "w2", 2)
    assert [(r.key, r.reason) for r in rejected_pooled] == [(r.key, r.reason) for r in rejected_alone]
    assert len(rejected_alone) == 1 and "unreadable image" in rejected_alone[0].reason
    assert list(pooled.keys) == list(alone.keys) and alone.n == len(mini_samples) - 1
    assert pooled.column_names == alone.column_names and pooled.array_names == alone.array_names
    for name in alone.column_names:
        np.testing.assert_array_equal(pooled.column(name), alone.column(name), err_msg=name)
    for name in alone.array_names:
        a, b = alone.array(name), pooled.array(name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name  # bit-identical, NaNs included


def test_workers_resume_from_the_same_shards(tiny_llava, mini_samples, tmp_path):
    """The worker count is not part of the cache key: shards written with 0 workers are reused with 2."""
    first, _ = _extract(tiny_llava, mini_samples[:12], tmp_path, 0)
    directories = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(directories) == 1
    markers = sorted(directories[0].glob("*.done"))
    assert len(markers) == 2
    # One shard gone (as after a kill before its marker): the workers compute it again.
    kept_marker, removed_marker = markers
    removed_marker.unlink()
    kept_stamp = kept_marker.stat().st_mtime_ns
    again, _ = _extract(tiny_llava, mini_samples[:12], tmp_path, 2)
    assert removed_marker.exists() and kept_marker.stat().st_mtime_ns == kept_stamp
    assert list(again.keys) == list(first.keys)
    for name in first.array_names:
        assert again.array(name).tobytes() == first.array(name).tobytes(), name


def test_pool_keeps_order_across_views_and_calls(tiny_llava, mini_samples):
    extractor = Extractor(tiny_llava, make_features(["answer_nll"], {}), batch_size=3, num_workers=2)
    try:
        batches = [mini_samples[i : i + 3] for i in range(0, 12, 3)]
        for view in ("full", "answer_only", "full"):
            local = [extractor.prepare(batch, view) for batch in batches]
            pooled = list(extractor.prepared_batches(batches, view))
            assert [p.kept for p in pooled] == [p.kept for p in local]
            assert [[r.text for r in p.rendered] for p in pooled] == [[r.text for r in p.rendered] for p in local]
            for p, q in zip(pooled, local):
                assert p.images is None  # not sent back from a worker
                for name, tensor in q.batch.inputs.items():
                    assert torch.equal(p.batch.inputs[name], tensor), name
                assert torch.equal(p.batch.answer, q.batch.answer) and torch.equal(p.batch.image, q.batch.image)
    finally:
        extractor.close()


def test_a_split_batch_reloads_the_images_a_worker_did_not_send(tiny_llava, mini_samples):
    """Out-of-memory halving re-encodes sub-batches: from a worker's batch it loads the images again."""
    extractor = Extractor(tiny_llava, make_features(["last_token"], {}), batch_size=4, num_workers=0)
    batch = mini_samples[:4]
    whole = extractor.forward_prepared(extractor.prepare(batch, "full"))
    from_worker = extractor.preparer.prepare(batch, "full", keep_images=False)
    assert from_worker.images is None
    rows, values, rejected = extractor._forward_groups(from_worker, [[0, 1], [2, 3]], [])
    assert rows == whole[0] and rejected == []
    # Halves pad less than the whole batch: equal up to padding's last bits.
    np.testing.assert_allclose(values["last_token"], whole[1]["last_token"], rtol=1e-4, atol=1e-5)


def test_default_worker_count(monkeypatch):
    from mmselect.features import prepare_pool

    for cpus, expected in ((1, 0), (2, 1), (4, 3), (16, 8), (64, 8)):
        monkeypatch.setattr(prepare_pool, "available_cpus", lambda cpus=cpus: cpus)
        assert default_workers(torch.device("cuda")) == expected
        assert default_workers(torch.device("cpu")) == 0


def test_preparer_travels_without_the_model(tiny_llava):
    import pickle

    preparer = BatchPreparer(tiny_llava, 512)
    copy = pickle.loads(pickle.dumps(preparer))
    assert copy.bundle.model is None and tiny_llava.model is not None
    assert copy.bundle.tokenizer("a cat")["input_ids"] == tiny_llava.tokenizer("a cat")["input_ids"]


@pytest.mark.parametrize("command", ["extract", "run"])
def test_num_workers_option_reaches_the_extraction(command, mini_data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mmselect import pipeline
    from mmselect.cli import app
    from mmselect.errors import ConfigError

    seen = {}

    def capture(*args, options=None, **kwargs):
        seen["options"] = options
        raise ConfigError("stop here")

    monkeypatch.setattr(pipeline, command, capture)
    args = {"extract": ["extract", mini_data, "--out", tmp_path / "f", "--features", "tokens"],
            "run": ["run", mini_data, "--method", "random", "--budget", "0.5", "--out", tmp_path / "o"]}[command]
    for given, expected in ((["--num-workers", "3"], 3), ([], None)):
        result = CliRunner().invoke(app, [str(a) for a in args + given])
        assert "stop here" in result.output and seen["options"].num_workers == expected
    refused = CliRunner().invoke(app, [str(a) for a in args + ["--num-workers", "-1"]])
    assert refused.exit_code != 0 and "num-workers" in refused.output


def test_the_pair_pass_prepares_in_workers_too(tiny_llava, mini_samples, tmp_path):
    """CLIPPER's one-shot pairs (two samples in one sequence) give the same values with workers."""
    from mmselect.features.context import ExtractionContext, ExtractOptions
    from mmselect.features.extract import run_features
    from mmselect.runners import LocalRunner

    values = []
    for workers in (0, 2):
        options = ExtractOptions(batch_size=4, shard_size=8, progress=False, num_workers=workers,
                                 feature_params={"clipper": {"m": 1}})
        context = ExtractionContext(options, LocalRunner(), tmp_path / f"w{workers}", tiny_llava)
        features, _ = run_features(mini_samples[:8], ["clipper"], context)
        values.append(features)
    assert values[0].column("icl_answer_nll").tobytes() == values[1].column("icl_answer_nll").tobytes()
    assert np.isfinite(values[0].column("icl_answer_nll")).all()
