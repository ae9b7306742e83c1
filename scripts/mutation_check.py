"""Plant known bugs one at a time and check that the tests catch each of them.

Every planted bug is a textual patch: a source snippet that occurs exactly once in
``src/mmselect/**/*.py`` (found by searching, so code may move between files) and its replacement.
For each bug the script copies ``src/`` to a temporary directory, applies the patch there, and runs
the bug's tests with the copy first on ``PYTHONPATH`` (it checks that ``import mmselect`` really
resolves to the copy, since the package is installed in editable mode). A bug is *caught* when a
test fails, *survived* when all pass, *error* when pytest could not run the tests.

    python scripts/mutation_check.py                 # every planted bug, then a markdown table
    python scripts/mutation_check.py --only budget-rounding-guard --only prism-keeps-redundant
    python scripts/mutation_check.py --list          # the bugs and their tests, nothing run

Before planting anything the selected tests are run once on an unmodified copy: a test that
already fails would make every bug it guards look caught. Exit status: 0 when every bug is caught.
Not collected by pytest (it lives outside ``tests/``); see docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src"


@dataclass(frozen=True)
class PlantedBug:
    id: str
    effect: str  # what a user would get
    snippet: str
    replacement: str
    tests: tuple[str, ...]


P = "tests/test_promises.py::"
M = "tests/test_promises_models.py::"
D = "tests/test_data.py::"

BUGS = [
    # --- the four of issue #19 ---
    PlantedBug("budget-rounding-guard", "`--budget 0.29` of 100 records selects 28",
               "return int(math.floor(self.fraction * n + 1e-9))", "return int(math.floor(self.fraction * n))",
               (P + "test_fraction_budget_counts_worked_by_hand",)),
    PlantedBug("content-hash-unsorted", "the same record with its fields in another order gets another key",
               "canonical = json.dumps(record, sort_keys=True,", "canonical = json.dumps(record, sort_keys=False,",
               (P + "test_sample_key_ignores_field_order_but_not_values",)),
    PlantedBug("shard-done-checks-data", "a run killed before a shard's done-marker resumes from that incomplete shard",
               'if not (self.directory / f"{name}{DONE_SUFFIX}").exists():',
               'if not (self.directory / f"{name}.json").exists():',
               (P + "test_shard_without_its_marker_is_not_done", M + "test_shard_killed_before_its_marker_is_recomputed")),
    PlantedBug("perplexity-mid-is-low", "`-p band=mid` keeps the lowest perplexities",
               "order = band_order(self.nll_, k, self.band)",
               'order = band_order(self.nll_, k, "low" if self.band == "mid" else self.band)',
               (P + "test_perplexity_band_picks", P + "test_perplexity_default_band_is_mid")),
    PlantedBug("length-keeps-shortest", "`length` keeps the shortest responses",
               "selected=top_k_mask(self.scores_, k)", "selected=top_k_mask(-self.scores_, k)",
               (P + "test_length_keeps_the_longest",)),
    # --- readers, keys and the CLI ---
    PlantedBug("reader-keys-unsorted", "keys of records without floats depend on the order of their fields",
               "orjson.dumps(record, option=orjson.OPT_SORT_KEYS)", "orjson.dumps(record)",
               (P + "test_reader_keys_ignore_field_order",)),
    PlantedBug("reader-blank-answer-accepted", "a record whose answer is only whitespace is read as valid",
               "if usual and all(texts) and not any(map(str.isspace, texts)):", "if usual and all(texts):",
               (D + "test_reader_fast_texts_agree_with_the_general_path",)),
    PlantedBug("reader-task-dot-directory", "`./coco/x.jpg` is filed under a task `.`, not `coco`",
               'if head and head != "." and rest and rest[0] not in "/.":', "if head and rest:",
               (D + "test_reader_task_shortcut_agrees_with_infer_task",)),
    PlantedBug("task-field-ignored", "`--task-field` has no effect: tasks come from the image directory",
               "value = record.get(self.task_field)", "value = None",
               (P + "test_task_field_on_run",)),
    PlantedBug("select-scores-ignored", "`select --scores FILE` selects without the scores (mmSSR: missing features)",
               "task_field=task_field, scores=scores, allow_missing_scores=allow_missing_scores, dedup=dedup,",
               "task_field=task_field, scores=None, allow_missing_scores=allow_missing_scores, dedup=dedup,",
               (P + "test_select_scores_flag",)),
    # --- budgets ---
    PlantedBug("apportion-smallest-remainder", "budgets split over tasks/clusters give the extra samples to the wrong parts",
               "order = sorted(range(n), key=lambda t: (-frac[t], t))", "order = sorted(range(n), key=lambda t: (frac[t], t))",
               ("tests/test_budget.py",)),
    # --- loading ---
    PlantedBug("model-code-always-trusted", "the model repository's own code runs without `--trust-remote-code`",
               'kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}',
               'kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": True}',
               (M + "test_trust_remote_code_only_with_the_flag",)),
    PlantedBug("revision-dropped", "`--revision COMMIT` loads the default branch (or the preset's pin)",
               "revision = revision or (preset.revision if preset else None)",
               "revision = preset.revision if preset else None",
               (M + "test_revision_is_passed_to_the_loader_and_recorded",)),
    # --- extraction reductions ---
    PlantedBug("mean-embed-over-padding", "`mean_embed` averages the padding tokens of a batch too",
               "out[self.arrays[0]] = _masked_mean(hidden, batch.attention)",
               "out[self.arrays[0]] = hidden.float().mean(dim=1)",
               (M + "test_mean_embed_spectrum_coincide_match_a_direct_computation",)),
    PlantedBug("spectrum-squared-values", "`sve` is the entropy of the squared singular values (energy), not DataTailor's",
               "p = sigma / safe_total.unsqueeze(1)", "p = sigma**2 / (sigma**2).sum(dim=1, keepdim=True).clamp_min(1e-300)",
               ("tests/test_spectrum.py", M + "test_mean_embed_spectrum_coincide_match_a_direct_computation")),
    PlantedBug("coincide-text-before-image", "COINCIDE's text half averages the system prompt before the image too",
               "text = batch.attention & ~batch.image & (positions >= first_image.unsqueeze(1))",
               "text = batch.attention & ~batch.image",
               (M + "test_mean_embed_spectrum_coincide_match_a_direct_computation",)),
    # --- export and report ---
    PlantedBug("subset-reserialised", "subset.json holds re-serialised records, not the input's bytes",
               "raws = [dataset.raw(p) for p in positions]",
               "raws = [json.dumps(dataset.record(p)) for p in positions]",
               (P + "test_json_subset_is_the_input_bytes", P + "test_jsonl_subset_is_the_input_lines")),
    PlantedBug("subset-drops-last", "subset.json misses the last selected record",
               'body = ",\\n".join(raws)', 'body = ",\\n".join(raws[:-1])',
               (P + "test_json_subset_is_the_input_bytes",)),
    PlantedBug("report-selected-quantiles", "report.md shows the quantiles of all samples as those of the selected",
               'lines.append(f"- selected: {_quantiles(scores[selected])}")',
               'lines.append(f"- selected: {_quantiles(scores)}")',
               (P + "test_report_md_numbers",)),
    # --- one per method ---
    PlantedBug("datatailor-rank-reversed", "DataTailor's rank normalisation counts from the top: values inverted",
               "ranks[order] = np.arange(n, dtype=np.float64)", "ranks[order] = np.arange(n, 0, -1, dtype=np.float64)",
               ("tests/test_datatailor.py",)),
    PlantedBug("coincide-temperature-inverted", "COINCIDE's cluster shares use S*tau instead of S/tau",
               "z = score / temperature", "z = score * temperature",
               ("tests/test_coincide.py",)),
    PlantedBug("prism-keeps-redundant", "PRISM keeps the most redundant images",
               "scores = -redundancy", "scores = redundancy",
               ("tests/test_prism.py",)),
    PlantedBug("mmssr-pool-ascending", "mmSSR takes the lowest-scored samples of each capability first",
               "rank_order = np.lexsort((tie_rank, -key))", "rank_order = np.lexsort((tie_rank, key))",
               ("tests/test_mmssr.py",)),
    PlantedBug("mmssr-zero-unparsed", "a scorer reply of 0 is read as no score (NaN)",
               "if not SCORE_MIN <= value <= SCORE_MAX", "if not SCORE_MIN < value <= SCORE_MAX",
               (M + "test_mmssr_run_selects_from_the_scorer_replies",)),
    PlantedBug("clipper-preference-reversed", "CLIPPER keeps the least preferred samples of each bin",
               "order = np.lexsort((tie, -preference, bins))", "order = np.lexsort((tie, preference, bins))",
               ("tests/test_clipper.py",)),
    PlantedBug("scalselect-energy-off-by-one", "ScalSelect keeps one direction fewer than the energy threshold needs",
               'k = int(np.searchsorted(cumulative, energy, side="left")) + 1',
               'k = int(np.searchsorted(cumulative, energy, side="left"))',
               ("tests/test_scalselect.py",)),
    PlantedBug("scalselect-not-centred", "ScalSelect scores the raw rows: a common offset changes the selection",
               "    block -= mean\n        if standardize:", "    block -= 0\n        if standardize:",
               ("tests/test_scalselect.py",)),
]


def copy_source(destination: Path) -> Path:
    shutil.copytree(SOURCE, destination / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return destination / "src"


def plant(source: Path, bug: PlantedBug) -> Path:
    """Apply ``bug`` to the copy under ``source``; returns the file changed."""
    hits = [(path, path.read_text(encoding="utf-8").count(bug.snippet)) for path in sorted(source.rglob("*.py"))]
    hits = [(path, count) for path, count in hits if count]
    total = sum(count for _, count in hits)
    if total != 1:
        where = ", ".join(f"{p.relative_to(source)} ({c})" for p, c in hits) or "nowhere"
        raise RuntimeError(f"{bug.id}: the snippet must occur exactly once in src/, found {total} times: {where}")
    path = hits[0][0]
    path.write_text(path.read_text(encoding="utf-8").replace(bug.snippet, bug.replacement), encoding="utf-8")
    return path


def environment(source: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def check_imported_from(source: Path) -> None:
    """The package the tests import must be the copy, not the editable install."""
    found = subprocess.run([sys.executable, "-c", "import mmselect; print(mmselect.__file__)"], cwd=REPO,
                           env=environment(source), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(source.resolve()):
        raise RuntimeError(f"mmselect is imported from {found}, not from the copy {source}")


def run_tests(source: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, str, float]:
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=REPO, env=environment(source), capture_output=True, text=True, timeout=timeout,
                              check=False)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, output = -1, f"timed out after {timeout} s"
    return code, output, time.perf_counter() - started


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1).split("::", 1)[-1] if match else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="ID", help="run this bug only (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the planted bugs and their tests")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmodified copy")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per pytest run (default 600)")
    args = parser.parse_args(argv)

    known = {bug.id for bug in BUGS}
    unknown = sorted(set(args.only) - known)
    if unknown:
        parser.error(f"unknown bug id(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    bugs = [bug for bug in BUGS if not args.only or bug.id in args.only]
    if args.list:
        for bug in bugs:
            print(f"{bug.id}: {bug.effect}\n    tests: {' '.join(bug.tests)}")
        return 0

    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="mmselect-mutants-") as scratch:
        if not args.no_baseline:
            clean = copy_source(Path(scratch) / "clean")
            check_imported_from(clean)
            tests = tuple(dict.fromkeys(t for bug in bugs for t in bug.tests))
            code, output, seconds = run_tests(clean, tests, args.timeout * 2)
            print(f"baseline (no bug planted): {'pass' if code == 0 else 'FAIL'} in {seconds:.0f} s", flush=True)
            if code != 0:
                print(output[-4000:])
                return 2
        for index, bug in enumerate(bugs):
            source = copy_source(Path(scratch) / f"bug{index}")
            check_imported_from(source)
            changed = plant(source, bug)
            code, output, seconds = run_tests(source, bug.tests, args.timeout)
            outcome = {0: "survived", 1: "caught"}.get(code, "error")
            failures += outcome != "caught"
            rows.append((bug, changed.relative_to(source), outcome, first_failure(output), seconds))
            print(f"{bug.id}: {outcome} ({seconds:.0f} s)", flush=True)
            if outcome == "error":
                print(output[-2000:])
            shutil.rmtree(source.parent)

    print("\n| planted bug | what a user would get | file | result | first failing test | s |")
    print("|---|---|---|---|---|---:|")
    for bug, changed, outcome, test, seconds in rows:
        print(f"| `{bug.id}` | {bug.effect} | `{changed}` | {outcome} | `{test}` | {seconds:.0f} |")
    print(f"\n{len(rows) - failures} of {len(rows)} planted bugs caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
