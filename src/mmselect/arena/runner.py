"""Conditions and runs: world -> reference model -> features -> one selection and one fine-tuning run
per (condition, budget, seed), each with a done-marker, then the results.

The arena uses mmselect as a user would: the reference model is loaded from its directory by
``pipeline.extract``; every method selects through ``pipeline.select``; no method knows it is in the
arena. Only the two reference conditions, ``oracle`` and ``anti-oracle``, read the hidden pathology
labels.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import pipeline
from ..budget import Budget
from ..data.readers import read_dataset
from ..dedup import DEDUP_MODES
from ..errors import ConfigError
from ..export import library_versions
from ..methods import list_methods, method_class
from . import model as M
from .config import PATHOLOGIES, ArenaConfig, load_config
from .conditions import (
    DEFAULT_DEDUP,
    FULL,
    FULL_CLEAN,
    RANDOM,
    REFERENCES,
    SKIPPED,
    STAND_INS,
    Run,
    default_methods,
    plan_runs,
    reference_subset,
    write_json,
    write_mmssr_stand_in_scores,
)
from .world import World, write_world


class Progress:
    """A rich progress bar over runs with an ETA on a terminal; plain lines otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled, 0
        self.started = time.time()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("arena {task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("", total=total)

    def step(self, label: str, skipped: bool = False) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=label)
        elif self.enabled:
            elapsed = time.time() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            print(f"arena [{self.done}/{self.total}] {label}{' (done before)' if skipped else ''} "
                  f"elapsed {elapsed:.0f}s eta {eta:.0f}s", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message)
        elif self.enabled:
            print(f"arena: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _content_hash(key: str) -> str:
    return key.rsplit("-", 1)[-1]


class Arena:
    """One arena directory: ``world/``, ``reference/``, ``features/``, ``runs/``, ``results.{json,md}``."""

    def __init__(self, out: str | Path, config: ArenaConfig, *, device: str = "cpu", progress: bool = True):
        self.out = Path(out)
        self.config = config
        self.device = device
        self.progress_enabled = progress
        self.world = World(self.out / "world")
        self.reference_dir = self.out / "reference"
        self.features_dir = self.out / "features"
        self._encoded: dict[str, dict[str, M.Encoded]] = {}
        self._tokenizer = None
        self._stage1_state = None

    # --- preparation ---------------------------------------------------------------------------
    def prepare_world(self) -> None:
        marker = self.world.root / "world.json"
        want = {"config": self.config.to_dict()["world"], "digest": self.config.digest("world")}
        if marker.is_file() and json.loads(marker.read_text()) == want:
            return
        write_world(self.config.world, self.world.root)
        write_json(marker, want)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.reference_dir)
        return self._tokenizer

    def encoded(self, split: str) -> tuple[list[str], dict[str, M.Encoded]]:
        """Keys of a split's records and their tensors by content hash (duplicates share one)."""
        dataset = read_dataset(self.world.data(split), image_root=self.world.image_root)
        table = self._encoded.setdefault(split, {})
        cache: dict[str, np.ndarray] = {}
        for sample in dataset.samples:
            digest = _content_hash(sample.key)
            if digest not in table:
                table[digest] = M.encode_sample(sample, self.tokenizer, cache)
        return [s.key for s in dataset.samples], table

    def prepare_reference(self, log: Callable[[str], None]) -> dict[str, Any]:
        """Train the reference model from scratch on the clean stage-1 set (once) and save it."""
        marker = self.reference_dir / "done.json"
        training = self.config.training
        spec = {"world": self.config.digest("world"), "stage1_steps": training.stage1_steps, "stage1_lr": training.stage1_lr,
                "batch_size": training.stage1_batch_size, "vision_hidden": training.vision_hidden,
                "text_hidden": training.text_hidden, "text_layers": training.text_layers,
                "warmup": training.warmup, "decay": training.decay, "weight_decay": training.weight_decay}
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("spec") == spec:
                return done
        tokenizer = M.build_tokenizer()
        processor = M.build_processor(tokenizer)
        model = M.build_model(tokenizer, training, seed=0)
        M.save_reference(model, processor, self.reference_dir)  # the tokenizer the tensors come from
        self._tokenizer = None
        keys, table = self.encoded("stage1")
        data = [table[_content_hash(k)] for k in keys]
        lines: list[str] = []
        stats = M.train(model, data, steps=training.stage1_steps, lr=training.stage1_lr, batch_size=training.stage1_batch_size,
                        seed=0, warmup=training.warmup, decay=training.decay, weight_decay=training.weight_decay,
                        pad_id=tokenizer.pad_token_id, device=self.device, log=lambda m: (lines.append(m), log(f"stage-1 {m}") if len(lines) % 4 == 0 else None))
        model.to("cpu")
        M.save_reference(model, processor, self.reference_dir)
        (self.reference_dir / "train.log").write_text("\n".join(lines) + "\n")
        accuracy = self.evaluate(model)
        done = {"spec": spec, "parameters": M.parameter_count(model), "stage1_records": len(data),
                "train": {k: round(v, 4) for k, v in stats.items()}, "accuracy": accuracy}
        write_json(marker, done)
        return done

    def stage1_model(self):
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(self.reference_dir)
        if self._stage1_state is None:
            self._stage1_state = copy.deepcopy(model.state_dict())
        return model

    def evaluate(self, model) -> dict[str, float]:
        keys, table = self.encoded("test")
        data = [table[_content_hash(k)] for k in keys]
        tasks = self.world.tasks_of("test")
        scores = M.evaluate(model, data, tasks, self.tokenizer.pad_token_id, device=self.device)
        return {k: round(v, 4) for k, v in scores.items()}

    def prepare_features(self, methods: Sequence[str]) -> dict[str, Any]:
        """One ``extract`` for every method's features, from the reference model's directory."""
        marker = self.features_dir / "done.json"
        extract_for = [m for m in methods if m not in SKIPPED and m not in STAND_INS and m not in REFERENCES]
        if "mmssr" in methods and "perplexity" not in extract_for:
            extract_for.append("perplexity")  # answer NLL for mmSSR's stand-in scores
        spec = {"reference": json.loads((self.reference_dir / "done.json").read_text())["spec"], "methods": sorted(extract_for)}
        if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
            return json.loads(marker.read_text())
        if not extract_for:
            return {"spec": spec, "extracted": 0, "seconds": 0.0, "columns": []}
        started = time.time()
        featureset = pipeline.extract(
            self.world.data("pool"), out=self.features_dir, model=str(self.reference_dir), methods=extract_for,
            image_root=self.world.image_root, batch_size=self.config.training.extract_batch_size, progress=False,
            device=self.device,
        )
        if "mmssr" in methods:
            write_mmssr_stand_in_scores(self.world, featureset, self.mmssr_scores_path)
        done = {"spec": spec, "extracted": int(featureset.n), "seconds": round(time.time() - started, 2),
                "columns": list(featureset.column_names)}
        write_json(marker, done)
        return done

    @property
    def mmssr_scores_path(self) -> Path:
        return self.features_dir / "mmssr_stand_in_scores.jsonl"

    # --- runs ----------------------------------------------------------------------------------
    def select(self, run: Run, directory: Path) -> tuple[Path, dict[str, Any]]:
        """Write the run's subset; returns (subset file, selection info)."""
        selection = directory / "selection"
        if run.condition == FULL:
            return self.world.data("pool"), {}
        if run.condition == FULL_CLEAN:
            return self.world.data("clean_pool"), {}
        if run.condition in REFERENCES:
            return reference_subset(self.world, run, selection), {"reads_hidden_labels": True}
        params: dict[str, Any] = {}
        if "seed" in method_class(run.condition).param_names():
            params["seed"] = run.seed
        scores = self.mmssr_scores_path if run.condition == "mmssr" else None
        result = pipeline.select(
            self.features_dir, method=run.condition, budget=run.budget, out=selection, params=params,
            data=self.world.data("pool"), image_root=self.world.image_root, scores=scores, dedup=run.dedup,
        )
        manifest = json.loads((selection / "manifest.json").read_text())
        return selection / manifest["outputs"]["subset"], {"params": manifest["params"], "n_selected": result.n_selected}

    def selected_keys(self, run: Run, directory: Path) -> list[str]:
        """Pool keys of a run's training records (exact duplicates are told apart by position)."""
        if run.condition == FULL:
            return list(self.world.pathologies())
        if run.condition in REFERENCES:
            return json.loads((directory / "selection" / "keys.json").read_text())
        import pyarrow.parquet as pq

        table = pq.read_table(directory / "selection" / "selection.parquet", columns=["key", "selected"]).to_pydict()
        return [k for k, chosen in zip(table["key"], table["selected"]) if chosen]

    def composition(self, keys: list[str]) -> dict[str, Any]:
        truth = self.world.pathologies()
        counts = {p: 0 for p in ("clean", *PATHOLOGIES)}
        tasks: dict[str, int] = {}
        for key in keys:
            counts[truth[key]["pathology"]] += 1
            tasks[truth[key]["task"]] = tasks.get(truth[key]["task"], 0) + 1
        return {"n": len(keys), "pathologies": counts, "tasks": dict(sorted(tasks.items()))}

    def execute(self, run: Run, log: Callable[[str], None]) -> dict[str, Any]:
        directory = run.directory(self.out)
        done = directory / "done.json"
        if done.is_file():
            return json.loads(done.read_text())
        directory.mkdir(parents=True, exist_ok=True)
        started = time.time()
        subset, info = self.select(run, directory)
        select_seconds = time.time() - started
        split = "clean_pool" if run.condition == FULL_CLEAN else "pool"
        _, table = self.encoded(split)
        dataset = read_dataset(subset, image_root=self.world.image_root, check_images=False)
        data = [table[_content_hash(s.key)] for s in dataset.samples]
        composition = self.composition(self.selected_keys(run, directory)) if split == "pool" else None
        if composition is not None and composition["n"] != len(data):
            raise RuntimeError(f"{run.label}: {len(data)} training records but {composition['n']} selected keys")
        training = self.config.training
        model = self.stage1_model()
        model.load_state_dict(self._stage1_state)
        steps = M.steps_for(training, len(data))
        lines: list[str] = []
        torch.manual_seed(run.seed)
        stats = M.train(model, data, steps=steps, lr=training.lr, batch_size=training.batch_size, seed=run.seed,
                        warmup=training.warmup, decay=training.decay, weight_decay=training.weight_decay,
                        pad_id=self.tokenizer.pad_token_id, device=self.device, log=lines.append)
        accuracy = self.evaluate(model)
        (directory / "train.log").write_text("\n".join(lines) + "\n")
        result = {
            "condition": run.condition, "budget": run.budget, "seed": run.seed, "dedup": run.dedup, "subset": str(subset.relative_to(self.out)),
            "n_train": len(data), "steps": steps, "accuracy": accuracy, "composition": composition,
            "selection": info, "train": {k: round(v, 4) for k, v in stats.items()},
            "seconds": {"select": round(select_seconds, 2), "train": round(stats["seconds"], 2),
                        "total": round(time.time() - started, 2)},
        }
        write_json(done, result)
        log(f"{run.label}: macro {accuracy['macro_mean']:.3f} ({result['seconds']['total']:.0f}s)")
        return result


def run_arena(
    out: str | Path,
    *,
    config: ArenaConfig | str | Path | None = None,
    methods: Sequence[str] | None = None,
    budgets: Sequence[str | float] = ("0.2",),
    seeds: int | Sequence[int] = 1,
    device: str = "cpu",
    progress: bool = True,
    dedup: str = DEFAULT_DEDUP,
) -> dict[str, Any]:
    """Run the arena into ``out`` (resuming what is done) and write ``results.json`` / ``results.md``.

    ``methods``: registered method names (default: all but ``random``, which always runs);
    ``budgets``: fractions or counts as ``select --budget`` takes them; ``seeds``: a count (0..n-1)
    or the seeds themselves; ``dedup``: the duplicate guard of random's and the methods' selections
    (``select``'s own default: ``exact``); another guard writes ``results-dedup-<mode>.*`` and runs in
    its own run directories, reusing the world, the reference model, the features and the conditions
    that do not select (full data, the references).
    """
    from .results import write_results

    if not isinstance(config, ArenaConfig):
        config = load_config(config)
    known = list_methods()
    methods = list(default_methods() if methods is None else methods)
    for name in methods:
        if name not in known:
            raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(known))}")
    methods = [m for m in methods if m != RANDOM]
    budgets = [str(Budget.parse(b)) if not isinstance(b, str) else b for b in budgets]
    for b in budgets:
        Budget.parse(b)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("at least one seed")
    runnable = [m for m in methods if m not in SKIPPED]
    previous_threads = torch.get_num_threads()
    if config.training.threads > 0:
        torch.set_num_threads(config.training.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arena = Arena(out, config, device=device, progress=progress)
    if dedup not in DEDUP_MODES:
        raise ConfigError(f"dedup must be one of {', '.join(DEDUP_MODES)}, got {dedup!r}")
    runs = plan_runs(runnable, budgets, seed_list, dedup)
    bar = Progress(len(runs), progress)
    try:
        bar.log("world")
        arena.prepare_world()
        bar.log("reference model (stage 1)")
        reference = arena.prepare_reference(bar.log)
        bar.log(f"reference model: test macro mean {reference['accuracy']['macro_mean']:.3f}; extracting features")
        features = arena.prepare_features(runnable)
        results: list[dict[str, Any]] = []

        def report(complete: bool) -> dict[str, Any]:
            return write_results(
                out, config=config, runs=results, reference=reference, features=features, methods=methods,
                budgets=budgets, seeds=seed_list, skipped={m: SKIPPED[m] for m in methods if m in SKIPPED},
                stand_ins={m: STAND_INS[m] for m in runnable if m in STAND_INS}, versions=library_versions(),
                complete=complete, planned=len(runs), dedup=dedup,
            )

        for run in runs:
            already = (run.directory(out) / "done.json").is_file()
            results.append(arena.execute(run, bar.log))
            bar.step(run.label, skipped=already)
            if not already:
                report(complete=False)  # readable results while the rest runs
        summary = report(complete=True)
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    return summary
