"""Bring your own scores: per-sample columns computed elsewhere (e.g. mmSSR scores), merged into
a features directory before selection (``mmselect select --scores FILE``), or written by extraction
as the ``user-scores`` feature (``--feature-param user-scores.path=FILE``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataFormatError
from .registry import Feature, FeatureOption, FeatureOutput
from .store import FeatureSet

SCORE_PREFIX = "score_"
STYLES_COLUMN = "styles"


def as_style_list(value) -> list[str]:
    """A styles cell as a list: lists/arrays as is, a comma-separated or JSON string split, None -> []."""
    if value is None:
        return []
    if isinstance(value, float) and np.isnan(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
                return [str(s) for s in parsed]
            except json.JSONDecodeError:
                pass
        return [s.strip() for s in text.split(",") if s.strip()]
    return [str(s) for s in value]


def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        types = {"key": pa.string(), STYLES_COLUMN: pa.string()}
        try:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        except pa.ArrowInvalid as error:
            raise DataFormatError(f"{path}: cannot read CSV ({error})") from None
        return table.to_pylist()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataFormatError(f"{path}:{line_no}: invalid JSON ({error.msg})") from None
        return rows
    raise DataFormatError(f"{path}: unsupported scores file type {suffix!r} (use .csv, .jsonl or .parquet)")


def _to_float(value) -> float:
    if value is None:
        return np.nan
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in ("nan", "null", "none"):
            return np.nan
        try:
            return float(text)
        except ValueError:
            return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def load_user_scores(
    path: str | Path, features_or_keys: FeatureSet | Sequence[str], *, allow_missing: bool = False
) -> dict[str, np.ndarray]:
    """Read mmSSR scores and styles you computed yourself; return columns aligned with the samples.

    File layout (``.csv``, ``.jsonl`` or ``.parquet``), one row per sample:

    * an identifier: ``key`` (the sample key, as in ``samples.parquet``) **or** ``position`` (0-based
      record position in the dataset);
    * ``score_<capability>`` columns: a number (any scale; the threshold applies to it), empty /
      ``NaN`` / ``null`` when there is no usable score;
    * ``styles``: the sample's styles, first style first: a list (JSONL/parquet), or a string with
      the styles separated by commas, or a JSON list in a string (CSV), e.g. ``"yes/no, multi-choice"``.

    Returns ``{"score_<capability>": float array, "styles": object array of lists}`` in the row order
    of ``features_or_keys`` (add them with ``features.with_columns(**columns)``). Unknown keys or
    positions, duplicates, and (unless ``allow_missing``) samples absent from the file are errors;
    absent samples get NaN scores and no styles when allowed.
    """
    path = Path(path)
    keys = features_or_keys.keys if isinstance(features_or_keys, FeatureSet) else list(features_or_keys)
    keys = [str(k) for k in keys]
    n = len(keys)
    rows = _read_table(path)
    if not rows:
        raise DataFormatError(f"{path}: no rows")
    fields: list[str] = []
    for row in rows:
        for name in row:
            if name not in fields:
                fields.append(name)
    if "key" in fields:
        id_field = "key"
        index_of = {key: i for i, key in enumerate(keys)}
    elif "position" in fields:
        # record positions in the dataset, not feature rows: with rejected records they differ
        id_field = "position"
        index_of = _rows_by_position(features_or_keys, keys)
    else:
        raise DataFormatError(f"{path}: needs a 'key' or a 'position' column to match rows to samples")
    score_fields = [f for f in fields if f.startswith(SCORE_PREFIX)]
    if not score_fields and STYLES_COLUMN not in fields:
        raise DataFormatError(f"{path}: no score_<capability> or styles column (columns: {fields})")
    columns: dict[str, np.ndarray] = {f: np.full(n, np.nan) for f in score_fields}
    styles = np.empty(n, dtype=object)
    styles[:] = [[] for _ in range(n)]
    seen = np.zeros(n, dtype=bool)
    for line_no, row in enumerate(rows, 1):
        ident = row.get(id_field)
        if id_field == "key":
            i = index_of.get(str(ident)) if ident is not None else None
            if i is None:
                raise DataFormatError(f"{path}: row {line_no}: key {ident!r} is not a sample of this dataset")
        else:
            try:
                position = int(ident)
            except (TypeError, ValueError):
                raise DataFormatError(f"{path}: row {line_no}: invalid position {ident!r}") from None
            i = index_of.get(position)
            if i is None:
                continue  # a record without features here (rejected): its scores are not needed
        if seen[i]:
            raise DataFormatError(f"{path}: row {line_no}: sample {keys[i]!r} appears twice")
        seen[i] = True
        for f in score_fields:
            columns[f][i] = _to_float(row.get(f))
        if STYLES_COLUMN in fields:
            styles[i] = as_style_list(row.get(STYLES_COLUMN))
    if not allow_missing and not seen.all():
        missing = [keys[i] for i in np.flatnonzero(~seen)[:10]]
        raise DataFormatError(
            f"{path}: {int((~seen).sum())} sample(s) have no row, e.g. {missing} (--allow-missing-scores, "
            "in Python allow_missing=True, gives them NaN scores)"
        )
    if STYLES_COLUMN in fields:
        columns[STYLES_COLUMN] = styles
    return columns


def merge_user_scores(features: FeatureSet, path: str | Path, *, allow_missing: bool = False) -> FeatureSet:
    """``features`` with the columns of the scores file ``path`` added (see :func:`load_user_scores`)."""
    return features.with_columns(**load_user_scores(path, features, allow_missing=allow_missing))


def _rows_by_position(features_or_keys, keys) -> dict[int, int]:
    """Record position -> feature row: the ``position`` column when the features have one, else
    the position written at the start of mmselect's sample keys (``0000042-3fa1c09e2b``), else (keys
    of another form, e.g. hand-made features) the row itself."""
    if isinstance(features_or_keys, FeatureSet) and features_or_keys.has_column("position"):
        positions = [int(p) for p in features_or_keys.column("position")]
    else:
        heads = [str(k).split("-", 1) for k in keys]
        if all(len(h) == 2 and h[0].isdigit() for h in heads):
            positions = [int(h[0]) for h in heads]
        else:
            positions = list(range(len(keys)))
    return {p: row for row, p in enumerate(positions)}


class UserScoresFeature(Feature):
    """Columns read from your own scores file instead of computed."""

    name = "user-scores"
    summary = "score_<capability>/styles columns from your own file (CSV, JSONL, parquet; keyed by key or position)"
    columns = ("score_<capability>", "styles")
    needs = ("model",)  # only the samples the main pass kept
    options = {
        "path": FeatureOption(None, "the scores file (required)"),
        "allow_missing": FeatureOption(False, "give samples without a row NaN scores instead of failing"),
    }

    def run(self, samples: Sequence, context) -> FeatureOutput:
        from ..errors import ConfigError

        path = self.option("path")
        if not path:
            raise ConfigError("feature 'user-scores' needs its file: --feature-param user-scores.path=FILE")
        columns = load_user_scores(path, [s.key for s in samples], allow_missing=bool(self.option("allow_missing")))
        return FeatureOutput(columns=columns, info={"user_scores": str(path)})


__all__ = ["UserScoresFeature", "as_style_list", "load_user_scores", "merge_user_scores"]
