"""Everything a report shows, gathered from an output directory (plus, optionally, the records and features).

Sizes stay bounded whatever the number of records: histograms are binned, cards and the 2-D map are
samples, and per-record data never leaves this module.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.readers import Dataset, read_dataset
from ..data.records import IMAGE_PLACEHOLDER, image_list, parse_turns
from ..errors import MMSelectError
from ..export import MANIFEST_FILE, SELECTION_FILE, read_rejected

# Columns of selection.parquet that are bookkeeping, not values to plot.
BOOKKEEPING_COLUMNS = ("key", "position", "task", "selected", "pick_order")
CARDS_PER_GROUP = 8
MAP_POINTS = 3000
HISTOGRAM_BINS = 40
THUMBNAIL_SIZE = 128
TEXT_PREVIEW_CHARS = 280
# Preferred embedding for the 2-D map, when the features directory holds several arrays.
MAP_ARRAYS = ("last_token", "coincide", "visual_mean", "clip_image", "clip_text")


class ReportError(MMSelectError):
    """An output directory cannot be reported on."""


class Columns(Mapping):
    """Columns of a parquet table as numpy arrays, converted when first read (string columns of
    665k rows take a while, and most pages need only a few rows of them)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name not in self.table.column_names:
                raise KeyError(name)
            self._arrays[name] = self.table.column(name).to_numpy(zero_copy_only=False)
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column_names)

    def __len__(self) -> int:
        return self.table.num_columns


@dataclass
class Output:
    """One output directory: its manifest, the selection table's columns, its rejected records."""

    path: Path
    manifest: dict[str, Any]
    columns: Columns
    rejected: list[dict[str, Any]]
    task_names: list[str] = field(default_factory=list)
    task_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self):
        encoded = self.columns.table.column("task").combine_chunks().cast(pa.string()).dictionary_encode()
        self.task_names = [str(t) for t in encoded.dictionary.to_pylist()]
        self.task_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    @property
    def n(self) -> int:
        return len(self.columns["key"])

    @property
    def selected(self) -> np.ndarray:
        return self.columns["selected"].astype(bool)

    @property
    def scores(self) -> np.ndarray:
        return self.columns["score"].astype(np.float64)

    @property
    def label(self) -> str:
        return f"{self.manifest.get('method', '?')} {self.manifest.get('budget', '')}".strip()

    def value_columns(self) -> list[str]:
        """``score`` and the method's numeric columns (DataTailor's informativeness, ...)."""
        schema = self.columns.table.schema
        names = [
            f.name for f in schema
            if f.name not in BOOKKEEPING_COLUMNS and f.name not in ("cluster", "score") and pa.types.is_floating(f.type)
        ]
        return ["score"] + names


def load_output(out_dir: str | Path) -> Output:
    path = Path(out_dir)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ReportError(
            f"{manifest_path} not found: give the --out directory of `mmselect run` or `mmselect select`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{manifest_path}: invalid JSON ({err}); rerun the selection to rewrite it") from None
    selection_path = path / SELECTION_FILE
    if not selection_path.is_file():
        raise ReportError(f"{selection_path} not found: rerun the selection to write it")
    table = pq.read_table(selection_path)
    missing = [c for c in ("key", "task", "selected", "score") if c not in table.column_names]
    if missing:
        raise ReportError(f"{selection_path} lacks the column(s) {', '.join(missing)}; rerun the selection")
    return Output(path, manifest, Columns(table), read_rejected(path))


# --- records --------------------------------------------------------------------------------------


@dataclass
class Records:
    """The dataset behind an output, or why it is not available."""

    dataset: Dataset | None
    note: str | None = None
    _by_key: dict[str, Any] | None = None

    def by_key(self) -> dict[str, Any]:
        if self._by_key is None:
            self._by_key = self.dataset.by_key() if self.dataset is not None else {}
        return self._by_key


def _existing(path: str | Path | None, base: Path) -> Path | None:
    if not path:
        return None
    for candidate in (Path(path), base / path):
        if candidate.exists():
            return candidate
    return None


def find_records(
    output: Output, dataset: Dataset | None = None, data: str | Path | None = None, image_root: str | Path | None = None
) -> Records:
    """The given dataset, else the one the manifest names (read again, images not opened)."""
    if dataset is not None:
        return Records(dataset)
    manifest = output.manifest
    recorded = data or manifest.get("data")
    if not recorded:
        return Records(None, "the selection was run without the dataset (`--data`), so there are no record cards")
    path = _existing(recorded, output.path)
    if path is None or not path.is_file():
        return Records(None, f"dataset {recorded} not found; pass --data to show record cards")
    root_recorded = image_root or manifest.get("image_root") or _feature_manifest(output).get("image_root")
    root = _existing(root_recorded, output.path)
    try:
        loaded = read_dataset(path, image_root=root if root and root.is_dir() else None, check_images=False)
    except MMSelectError as err:
        return Records(None, f"dataset {path} could not be read: {err}")
    note = None if root or not root_recorded else f"image root {root_recorded} not found: no thumbnails"
    index = loaded.by_key()
    keys = output.columns["key"][: min(output.n, 1000)].tolist()
    if keys and not any(k in index for k in keys):
        return Records(None, f"{path} is not the dataset of this selection (no key matches); pass --data")
    return Records(loaded, note)


def _feature_manifest(output: Output) -> dict[str, Any]:
    directory = _feature_dir(output)
    if directory is None or not (directory / MANIFEST_FILE).is_file():
        return {}
    try:
        return json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def _feature_dir(output: Output) -> Path | None:
    for name in ("feature_dir", "features"):
        value = output.manifest.get(name)
        if isinstance(value, str):
            path = _existing(value, output.path)
            if path is not None and path.is_dir():
                return path
    return None


class FeatureView:
    """What a report reads of a features directory (docs/features-format.md): single columns of
    ``samples.parquet`` and memory-mapped ``.npy`` arrays, each only when asked for."""

    def __init__(self, root: Path):
        self.root = root
        self._schema = pq.read_schema(root / "samples.parquet")
        self._rows = pq.ParquetFile(root / "samples.parquet").metadata.num_rows
        self._columns: dict[str, np.ndarray] = {}
        manifest_path = root / MANIFEST_FILE
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
        except json.JSONDecodeError:
            self.manifest = {}

    @property
    def keys(self) -> np.ndarray:
        return self.column("key")

    def has_column(self, name: str) -> bool:
        return name in self._schema.names

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            table = pq.read_table(self.root / "samples.parquet", columns=[name])
            self._columns[name] = table.column(name).to_numpy(zero_copy_only=False)
        return self._columns[name]

    @property
    def array_names(self) -> list[str]:
        names = []
        for path in sorted(self.root.glob("*.npy")):
            try:
                values = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                continue
            if values.ndim == 2 and values.shape[0] == self._rows:
                names.append(path.stem)
        return names

    def array(self, name: str) -> np.ndarray:
        return np.load(self.root / f"{name}.npy", mmap_mode="r", allow_pickle=False)


def load_features(output: Output, features: Any = None):
    """The features given (a FeatureSet, or a directory), else the manifest's features directory."""
    if features is not None and not isinstance(features, (str, Path)):
        return features  # a FeatureSet in memory
    directory = Path(features) if features is not None else _feature_dir(output)
    if directory is None or not (directory / "samples.parquet").is_file():
        return None
    return FeatureView(directory)


# --- summaries ------------------------------------------------------------------------------------


def reason_group(reason: str) -> str:
    """A rejection reason without its particulars (paths, quoted values, numbers), for grouping."""
    head = str(reason).split(":")[0]
    head = re.sub(r"'[^']*'|\"[^\"]*\"|\S*/\S*", "…", head)
    head = re.sub(r"\b\d+\b", "N", head)
    return head.strip() or "unknown"


def rejected_groups(rejected: list[dict[str, Any]], examples: int = 3) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for item in rejected:
        group = groups.setdefault(reason_group(item.get("reason", "")), {"count": 0, "examples": []})
        group["count"] += 1
        if len(group["examples"]) < examples:
            group["examples"].append(item)
    rows = [{"reason": name, **values} for name, values in groups.items()]
    return sorted(rows, key=lambda r: (-r["count"], r["reason"]))


@dataclass
class Composition:
    """Records per category, among all candidates and among the selected."""

    title: str
    categories: list[str]
    before: list[int]
    after: list[int]


def task_composition(output: Output, limit: int = 30) -> Composition:
    names, inverse, selected = output.task_names, output.task_codes, output.selected
    before = np.bincount(inverse, minlength=len(names))
    after = np.bincount(inverse[selected], minlength=len(names))
    order = np.argsort(-before, kind="stable")
    categories = [str(names[i]) for i in order[:limit]]
    b, a = before[order[:limit]].tolist(), after[order[:limit]].tolist()
    if len(order) > limit:  # many tasks: the long tail as one bar
        categories.append(f"{len(order) - limit} other tasks")
        b.append(int(before[order[limit:]].sum()))
        a.append(int(after[order[limit:]].sum()))
    return Composition("task", categories, [int(v) for v in b], [int(v) for v in a])


def binned_composition(title: str, values: np.ndarray, selected: np.ndarray, edges: list[int]) -> Composition:
    """Counts in [edges[i], edges[i+1]) with the last bin open-ended."""
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    index = np.clip(index, 0, len(edges) - 1)
    before = np.bincount(index, minlength=len(edges))
    after = np.bincount(index[selected], minlength=len(edges))
    labels = []
    for i, low in enumerate(edges):
        if i == len(edges) - 1:
            labels.append(f"{low:,}+")
        elif edges[i + 1] - low == 1:
            labels.append(f"{low:,}")
        else:
            labels.append(f"{low:,}–{edges[i + 1] - 1:,}")
    shown = [i for i in range(len(edges)) if before[i]] or [0]  # empty bins say nothing
    return Composition(title, [labels[i] for i in shown], before[shown].tolist(), after[shown].tolist())


COMPOSITION_EDGES = {
    "rounds": ("turns", [0, 1, 2, 3, 4, 5, 8, 16]),
    "n_images": ("images", [0, 1, 2, 3, 5]),
    "n_text_chars": ("characters", [0, 100, 200, 400, 800, 1600, 3200, 6400]),
}
COMPOSITION_TITLES = {
    "task": "task",
    "turns": "number of turns (question–answer rounds)",
    "images": "images per record",
    "characters": "text length (characters of all turns)",
}


def record_attributes(output: Output, featureset, records: Records) -> dict[str, np.ndarray]:
    """rounds / n_images / n_text_chars per row of the selection table, from the features or the records."""
    keys = output.columns["key"]
    if featureset is not None and all(featureset.has_column(c) for c in COMPOSITION_EDGES):
        feature_keys = np.asarray(featureset.keys, dtype=object)
        if len(feature_keys) == len(keys) and np.array_equal(feature_keys, keys):
            return {c: np.asarray(featureset.column(c)) for c in COMPOSITION_EDGES}
        order = np.argsort(feature_keys)
        where = np.searchsorted(feature_keys[order], keys)
        where = np.clip(where, 0, len(order) - 1)
        if np.array_equal(feature_keys[order][where], keys):
            return {c: np.asarray(featureset.column(c))[order][where] for c in COMPOSITION_EDGES}
    if records.dataset is not None:
        by_key = records.by_key()
        samples = [by_key.get(k) for k in keys]
        if all(s is not None for s in samples):
            return {
                "rounds": np.array([s.rounds for s in samples]),
                "n_images": np.array([s.n_images for s in samples]),
                "n_text_chars": np.array([s.text_chars for s in samples]),
            }
    return {}


@dataclass
class Histogram:
    name: str
    edges: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    missing_kept: int
    missing_dropped: int


def histogram(name: str, values: np.ndarray, selected: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
    else:
        edges = np.array([0.0, 1.0])
    kept, _ = np.histogram(values[finite & selected], bins=edges)
    dropped, _ = np.histogram(values[finite & ~selected], bins=edges)
    return Histogram(
        name, edges, kept, dropped, int((~finite & selected).sum()), int((~finite & ~selected).sum())
    )


def cluster_summary(output: Output, top: int = 15) -> dict[str, Any] | None:
    """Sizes of the clusters in the selection table's ``cluster`` column, and how many each kept."""
    if "cluster" not in output.columns:
        return None
    clusters = np.asarray(output.columns["cluster"])
    if clusters.dtype.kind not in "iu":
        return None
    valid = clusters >= 0
    if not valid.any():
        return None
    names, inverse = np.unique(clusters[valid], return_inverse=True)
    sizes = np.bincount(inverse)
    kept = np.bincount(inverse, weights=output.selected[valid].astype(np.float64)).astype(int)
    tasks = output.task_codes[valid]
    order = np.argsort(-sizes, kind="stable")[:top]
    _, first_row = np.unique(inverse, return_index=True)
    largest = [
        {"cluster": int(names[i]), "task": output.task_names[tasks[first_row[i]]], "records": int(sizes[i]), "selected": int(kept[i])}
        for i in order
    ]
    size_counts = np.bincount(sizes)
    return {
        "clusters": len(names),
        "singletons": int((sizes == 1).sum()),
        "median size": float(np.median(sizes)),
        "largest": int(sizes.max()),
        "clusters with a selected record": int((kept > 0).sum()),
        "largest clusters": largest,
        "clusters by size": [{"size": s, "clusters": int(c)} for s, c in enumerate(size_counts) if c][:20],
    }


# --- cards ----------------------------------------------------------------------------------------


@dataclass
class Card:
    key: str
    task: str
    group: str
    score: float | None = None
    selected: bool | None = None
    values: dict[str, float] = field(default_factory=dict)
    record_id: str | None = None
    question: str | None = None
    answer: str | None = None
    thumbnails: list[str] = field(default_factory=list)  # data: URIs
    image_notes: list[str] = field(default_factory=list)
    reason: str | None = None


def _shorten(text: str, limit: int = TEXT_PREVIEW_CHARS) -> str:
    text = " ".join(text.replace(IMAGE_PLACEHOLDER, "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_thumbnail_cache: dict[str, str | None] = {}


def thumbnail(path: str | Path, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG of the image as a data: URI, or None when it cannot be read."""
    path = str(path)
    if path in _thumbnail_cache:
        return _thumbnail_cache[path]
    try:
        image = _open_image(path)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - missing, corrupt, truncated or oversized: the card says so instead
        uri = None
    if len(_thumbnail_cache) > 512:
        _thumbnail_cache.clear()
    _thumbnail_cache[path] = uri
    return uri


def _open_image(path: str):
    """RGB image; through the data layer's opener (archives, pixel limit) where it has one."""
    try:
        from ..data.images import open_image
    except ImportError:
        from PIL import Image

        with Image.open(path) as image:
            return image.convert("RGB")
    return open_image(path)


def _local_image(image_root: Any, relative: str) -> Path | None:
    """``relative`` under a local image root, or None when there is none or the path leaves it."""
    if image_root is None or not Path(str(image_root)).is_dir():
        return Path(relative) if Path(relative).is_absolute() else None
    root = Path(str(image_root)).resolve()
    candidate = (root / relative).resolve()
    return candidate if root in candidate.parents else None


def _add_thumbnails(card: Card, relatives: list[str], refs: list[str | None], max_images: int = 2) -> None:
    for relative, ref in list(zip(relatives, refs))[:max_images]:
        uri = thumbnail(ref) if ref else None
        if uri is None:
            card.image_notes.append(f"{relative} ({'cannot be read' if ref else 'not found under the image root'})")
        else:
            card.thumbnails.append(uri)
    if len(relatives) > max_images:
        card.image_notes.append(f"+{len(relatives) - max_images} more image(s)")


def _fill_text(card: Card, record: Any, turns: list | None) -> None:
    if isinstance(record, dict) and record.get("id") is not None:
        card.record_id = str(record.get("id"))
    try:
        turns = turns if turns is not None else parse_turns(record, card.key)
        dialogue = [t for t in turns if t.role != "system"]
        card.question = _shorten(dialogue[0].text)
        answer = next((t for t in dialogue if t.role == "assistant"), None)
        card.answer = _shorten(answer.text) if answer else None
    except (MMSelectError, AttributeError, TypeError, IndexError):
        card.question = _shorten(json.dumps(record, ensure_ascii=False))


def selection_cards(output: Output, records: Records, rows: np.ndarray, group: str, values: list[str]) -> list[Card]:
    cards = []
    by_key = records.by_key()
    for row in rows:
        key = str(output.columns["key"][row])
        card = Card(
            key=key,
            task=str(output.columns["task"][row]),
            group=group,
            score=float(output.columns["score"][row]),
            selected=bool(output.columns["selected"][row]),
            values={v: float(output.columns[v][row]) for v in values if v != "score"},
        )
        sample = by_key.get(key)
        if sample is not None:
            _fill_text(card, sample.record, sample.turns)
            refs = list(sample.image_paths)
            _add_thumbnails(card, list(sample.images), refs + [None] * (len(sample.images) - len(refs)))
        cards.append(card)
    return cards


def rejected_cards(output: Output, records: Records, limit: int = CARDS_PER_GROUP) -> list[Card]:
    """Rejected records, one per reason first so that every kind of problem shows."""
    chosen, seen = [], set()
    for item in output.rejected:
        group = reason_group(item.get("reason", ""))
        if group not in seen:
            seen.add(group)
            chosen.append(item)
    for item in output.rejected:
        if len(chosen) >= limit:
            break
        if item not in chosen:
            chosen.append(item)
    cards = []
    dataset = records.dataset
    for item in chosen[:limit]:
        card = Card(key=str(item.get("key")), task=str(item.get("stage", "")), group="rejected", reason=item.get("reason"))
        card.record_id = item.get("id")
        position = item.get("position")
        if dataset is not None and isinstance(position, int) and 0 <= position < dataset.n_records:
            try:
                record = json.loads(dataset.raw(position))
            except (json.JSONDecodeError, TypeError):
                record = None
            if record is not None:
                _fill_text(card, record, None)
                try:
                    relatives = image_list(record, card.key) if isinstance(record, dict) else []
                except MMSelectError as err:
                    card.image_notes.append(str(getattr(err, "reason", err)))
                    relatives = []
                refs = [_local_image(dataset.image_root, r) for r in relatives]
                _add_thumbnails(card, relatives, [str(r) if r and r.is_file() else None for r in refs])
        cards.append(card)
    return cards


def card_rows(output: Output, per_group: int = CARDS_PER_GROUP, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows for each card group: best and worst kept, best dropped, a random sample of dropped."""
    scores = output.scores
    selected = output.selected
    finite = np.isfinite(scores)
    ranked = np.lexsort((np.arange(len(scores)), -np.where(finite, scores, -np.inf)))  # by score, NaN last
    kept_ranked = ranked[selected[ranked]]
    dropped_ranked = ranked[~selected[ranked]]
    kept_finite = kept_ranked[np.isfinite(scores[kept_ranked])]
    dropped = np.flatnonzero(~selected)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(dropped, size=min(per_group, len(dropped)), replace=False)) if len(dropped) else dropped
    return {
        "highest-scored kept": kept_ranked[:per_group],
        "lowest-scored kept": kept_finite[::-1][:per_group] if len(kept_finite) else kept_ranked[::-1][:per_group],
        "highest-scored dropped": dropped_ranked[:per_group],
        "random sample of dropped": sample,
    }


# --- 2-D map --------------------------------------------------------------------------------------


@dataclass
class Projection:
    array: str
    x: np.ndarray
    y: np.ndarray
    selected: np.ndarray
    n_total: int
    explained: tuple[float, float]


def _method_arrays(manifest: dict[str, Any]) -> list[str]:
    """The arrays the run's method reads (its embedding), first to last."""
    try:
        from ..methods import get_method

        method = get_method(manifest.get("method"), **(manifest.get("params") or {}))
        return [need.name for need in method.feature_needs() if need.kind == "array"]
    except Exception:  # noqa: BLE001 - an unknown method or another version's parameters: the usual names
        return []


def projection(output: Output, featureset, points: int = MAP_POINTS, seed: int = 0) -> Projection | None:
    """First two principal components (scikit-learn's randomized PCA) of a sample of the method's embedding."""
    if featureset is None or not featureset.array_names:
        return None
    names = featureset.array_names
    preferred = _method_arrays(output.manifest) + list(MAP_ARRAYS)
    name = next((n for n in preferred if n in names), names[0])
    matrix = featureset.array(name)
    feature_keys = np.asarray(featureset.keys, dtype=object)
    keys = output.columns["key"]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(keys), size=min(points, len(keys)), replace=False))
    if len(feature_keys) == len(keys) and np.array_equal(feature_keys, keys):
        feature_rows = rows
    else:
        order = np.argsort(feature_keys)
        where = np.clip(np.searchsorted(feature_keys[order], keys[rows]), 0, len(order) - 1)
        found = feature_keys[order][where] == keys[rows]
        rows, feature_rows = rows[found], order[where][found]
    if len(rows) < 3:
        return None
    sample = np.asarray(matrix[np.sort(feature_rows)], dtype=np.float64)[np.argsort(np.argsort(feature_rows))]
    finite = np.isfinite(sample).all(axis=1)
    sample, rows = sample[finite], rows[finite]
    if len(rows) < 3:
        return None
    from sklearn.decomposition import PCA

    components = min(2, sample.shape[1])
    pca = PCA(n_components=components, svd_solver="randomized", random_state=seed)
    coords = pca.fit_transform(sample)
    if components < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    ratios = np.nan_to_num(pca.explained_variance_ratio_).tolist() + [0.0]
    return Projection(name, coords[:, 0], coords[:, 1], output.selected[rows], len(keys), (ratios[0], ratios[1]))


# --- timing ---------------------------------------------------------------------------------------


def timings(output: Output, featureset=None) -> dict[str, float]:
    times = {}
    if output.manifest.get("seconds") is not None:
        times["selection"] = float(output.manifest["seconds"])
    feature_manifest = featureset.manifest if featureset is not None else _feature_manifest(output)
    if feature_manifest.get("seconds") is not None:
        times["feature extraction"] = float(feature_manifest["seconds"])
    return times
