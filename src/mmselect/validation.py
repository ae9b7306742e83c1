"""Checks that run before any model is loaded, so a mistake costs seconds, not an extraction.

Each check raises an :class:`~mmselect.errors.MMSelectError` subclass whose message names the
file, record or option and the fix. ``pipeline.extract``/``pipeline.run`` call them right after
reading the dataset (the budget against the usable records, the share of rejected records, the
output directory, the extraction options); the share of rejected records is checked again after
extraction, which can reject records the reader could not judge.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from .budget import Budget
from .errors import BudgetError, ConfigError, MMSelectError

log = logging.getLogger(__name__)

#: Default of ``--max-rejected``: above this share of rejected records a run stops.
DEFAULT_MAX_REJECTED = 0.10

#: Files ``select``/``run`` write into ``--out`` (a directory in their place cannot be replaced).
SELECTION_OUTPUTS = ("manifest.json", "selection.parquet", "rejected.jsonl", "report.md", "report.html",
                     "subset.json", "subset.jsonl", "subset.parquet")
#: Files ``extract`` writes into its features directory.
FEATURE_OUTPUTS = ("samples.parquet", "manifest.json", "rejected.jsonl")


class NoUsableRecordsError(MMSelectError):
    """Every record was rejected: the run wrote ``rejected.jsonl`` and the manifest, and selected nothing."""


class TooManyRejectedError(MMSelectError):
    """More records were rejected than ``--max-rejected`` allows (a wrong ``--image-root``, say)."""


def check_output_dir(out: str | os.PathLike, outputs: Sequence[str] = SELECTION_OUTPUTS, *, option: str = "--out") -> Path:
    """Create ``out`` (a directory) and make sure none of ``outputs`` inside it is a directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out} is a file, not a directory; give a directory (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{option} {out}: cannot create the directory ({err.strerror or err})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {out}: the directory is not writable")
    blocked = [name for name in outputs if (out / name).is_dir()]
    if blocked:
        raise ConfigError(
            f"{option} {out}: {', '.join(blocked)} {'is a directory' if len(blocked) == 1 else 'are directories'} "
            "where an output file goes; remove it or choose another output directory"
        )
    return out


def check_extract_options(options) -> None:
    """Batch and shard sizes are positive integers, ``max_length`` too when given."""
    for name in ("batch_size", "shard_size"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if options.max_length is not None and (not isinstance(options.max_length, int) or options.max_length < 1):
        raise ConfigError(f"--max-length must be a positive integer, got {options.max_length!r}")


def check_max_rejected(max_rejected: float | None) -> None:
    if max_rejected is None:
        return
    if isinstance(max_rejected, bool) or not isinstance(max_rejected, (int, float)) or not math.isfinite(max_rejected) \
            or not 0.0 <= max_rejected <= 1.0:
        raise ConfigError(f"--max-rejected must be a share between 0 and 1 (e.g. 0.1), got {max_rejected!r}")


def check_budgets(budgets: Iterable[Budget], n_usable: int, source: str | os.PathLike) -> None:
    """Every budget selects at least one and at most ``n_usable`` records (the records the reader
    kept; extraction may reject more, so the final check happens again at selection). With no
    usable record at all the run goes on to write what every run writes and say why nothing was
    usable."""
    if n_usable == 0:
        return
    for budget in budgets:
        try:
            k = budget.resolve(n_usable)
        except BudgetError:
            raise BudgetError(
                f"budget {budget} exceeds the {n_usable:,} usable record(s) of {source}; give a smaller count "
                "or a fraction such as 0.15"
            ) from None
        if k == 0:
            raise BudgetError(
                f"budget {budget} of the {n_usable:,} usable record(s) of {source} selects no record; raise the budget"
            )


def reason_kind(reason: str) -> str:
    """The kind of a rejection reason: its text before the first ``:`` (paths and details follow it)."""
    head = reason.split(":", 1)[0].strip()
    return head if head else reason


def check_rejected_share(rejected: Sequence, n_records: int, max_rejected: float | None, *, stage: str,
                         source: str | os.PathLike, examples: int = 2) -> None:
    """Raise :class:`TooManyRejectedError` when more than ``max_rejected`` of ``n_records`` were
    rejected, grouping the reasons (most frequent first) with ``examples`` records each."""
    if max_rejected is None or n_records <= 0 or len(rejected) <= max_rejected * n_records:
        return
    lines = _reasons_summary(rejected, examples)
    hint = " Is --image-root right?" if any("image" in reason_kind(r.reason) for r in rejected) else ""
    raise TooManyRejectedError(
        f"{len(rejected):,} of {n_records:,} records of {source} were rejected at {stage} "
        f"({len(rejected) / n_records:.0%}, more than --max-rejected {max_rejected:g}):\n" + "\n".join(lines)
        + f"\n{hint.strip() + ' ' if hint else ''}To go on with the usable records, raise --max-rejected (e.g. --max-rejected 1)."
    )


def _reasons_summary(rejected: Sequence, examples: int = 2) -> list[str]:
    """The reasons grouped by kind, most frequent first, with ``examples`` records each."""
    groups: dict[str, list] = defaultdict(list)
    for record in rejected:
        groups[reason_kind(record.reason)].append(record)
    lines = []
    for kind, records in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"  {len(records):,} x {kind}")
        for record in records[:examples]:
            label = f"#{record.position}" if record.position is not None else record.key
            if record.id is not None:
                label += f" (id {record.id})"
            lines.append(f"      record {label}: {record.reason}")
    return lines


def stop_if_nothing_usable(dataset, rejected: Sequence, out: str | os.PathLike, *, method: str, n_usable: int,
                           started: float | None = None) -> None:
    """With no usable record, end as every run ends (``rejected.jsonl``, a manifest whose counts
    add up) and raise :class:`NoUsableRecordsError` saying why no record was usable."""
    if n_usable > 0:
        return
    import time

    from .export import build_manifest, write_manifest, write_rejected

    out = Path(out)
    rejected = sorted(rejected, key=lambda r: r.position if r.position is not None else -1)
    write_rejected(rejected, out)
    counts = {"input_records": dataset.n_records, "selected": 0, "not_selected": 0, "rejected": len(rejected)}
    manifest = build_manifest(started=started or time.time(), counts=counts, method=method, data=str(dataset.path),
                              image_root=str(dataset.image_root) if dataset.image_root else None,
                              outputs={"subset": None, "rejected": "rejected.jsonl"}, error="no usable record")
    write_manifest(manifest, out)
    if dataset.n_records == 0:
        raise NoUsableRecordsError(f"{dataset.path} holds no record; nothing to select (manifest in {out})")
    raise NoUsableRecordsError(
        f"no record of {dataset.path} is usable: all {dataset.n_records:,} were rejected, so nothing was selected "
        f"(reasons in {out / 'rejected.jsonl'}):\n" + "\n".join(_reasons_summary(rejected))
    )


def check_feature_dir_model(out: str | os.PathLike, model: str | None) -> None:
    """A features directory that already holds another model's features is refused before the
    model is loaded (the revision is compared once the model is resolved, when the sets are merged)."""
    from .features.store import SAMPLES_FILE, FeatureConflictError, FeatureSet

    out = Path(out)
    if model is None or not (out / SAMPLES_FILE).exists():
        return
    # Opening it checks every file, so a damaged directory is reported now, not after the extraction.
    existing = (FeatureSet.load(out).manifest.get("model") or {}).get("name")
    if existing and existing != model:
        raise FeatureConflictError(
            f"{out} holds features of model {existing}; this extraction uses model {model}. Features of two "
            "models do not mix in one directory: extract into another --out (or delete the old one)"
        )


def check_model_available(model: str | None, revision: str | None = None) -> None:
    """The model is a preset, a local directory, or a hub id that is cached or that the hub knows:
    checked before the dataset is read, so a mistyped id costs seconds (see :mod:`.models.hub`)."""
    if not model:
        return
    from .models.hub import check_model_source
    from .models.registry import PRESETS

    preset = PRESETS.get(model)
    if preset is not None and (preset.tiny or preset.assemble):
        return
    if preset is None and not Path(model).exists() and "/" not in model:
        return  # load_model names the presets
    check_model_source(preset.hf_id if preset is not None else model, revision or (preset.revision if preset else None))


def before_model(dataset, rejected: Sequence, *, out: str | os.PathLike, model: str | None,
                 max_rejected: float | None) -> None:
    """What ``extract`` checks once the dataset is read, before it loads a model."""
    from .features.shards import reset_shard_counts

    check_max_rejected(max_rejected)
    check_rejected_share(rejected, dataset.n_records, max_rejected, stage="reading", source=dataset.path)
    check_feature_dir_model(out, model)
    reset_shard_counts()


def after_extraction(dataset, rejected: Sequence, *, max_rejected: float | None, cache: str | os.PathLike) -> None:
    """What ``extract`` checks and says once the model has run: resumed shards, rejected share."""
    from .features.shards import recomputed_shards, reused_shards

    if reused_shards():
        log.info("resumed: reused %d finished shard(s) from %s%s", reused_shards(), cache,
                 f", recomputed {recomputed_shards()} damaged one(s)" if recomputed_shards() else "")
    check_rejected_share(rejected, dataset.n_records, max_rejected, stage="extraction", source=dataset.path)


__all__ = [
    "NoUsableRecordsError", "stop_if_nothing_usable",
    "after_extraction", "before_model", "check_feature_dir_model", "check_model_available",
    "DEFAULT_MAX_REJECTED", "FEATURE_OUTPUTS", "SELECTION_OUTPUTS", "TooManyRejectedError", "check_budgets",
    "check_extract_options", "check_max_rejected", "check_output_dir", "check_rejected_share", "reason_kind",
]
