"""A visual-instruction world whose truth is known, written as LLaVA JSON + PNG files.

Seven tasks over procedural 32x32 images (coloured shapes on a 4x4 grid of 8-pixel cells, one shape
per cell, and scikit-learn's handwritten digits) plus a text-only task, with a closed answer
vocabulary so exact match is exact. The pool carries pathologies at the configured rates; which
record has which is written to ``pathologies.json``, a sidecar no selection method reads.

Splits: ``stage1`` (clean, balanced: trains the reference model), ``pool`` (what methods select
from), ``clean_pool`` (the pool's world without pathologies) and ``test`` (clean, balanced,
held-out digits, single-turn, the canonical phrasing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.readers import read_dataset
from .config import PATHOLOGIES, WorldConfig
from .generation import SPLITS, generate_items
from .scenes import SYSTEM_MESSAGE, Item, render


def item_record(item: Item, image: str | None, record_id: str) -> dict[str, Any]:
    conversations = [{"from": "system", "value": SYSTEM_MESSAGE}]
    for turn, (question, answer) in enumerate(item.turns):
        text = f"<image>\n{question}" if image is not None and turn == 0 else question
        conversations += [{"from": "human", "value": text}, {"from": "gpt", "value": answer}]
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = conversations
    return record


def _write_json(records: list[dict[str, Any]], path: Path) -> None:
    path.write_text("[\n" + ",\n".join(json.dumps(r, sort_keys=False) for r in records) + "\n]\n", encoding="utf-8")


@dataclass
class World:
    """A world on disk: ``<root>/{stage1,pool,clean_pool,test}.json``, ``images/``, ``pathologies.json``."""

    root: Path

    @property
    def image_root(self) -> Path:
        return self.root / "images"

    def data(self, split: str) -> Path:
        return self.root / f"{split}.json"

    @property
    def sidecar(self) -> Path:
        return self.root / "pathologies.json"

    def pathologies(self) -> dict[str, dict[str, Any]]:
        """key -> {"pathology", "task", "source"}: the hidden truth (never given to a method)."""
        return json.loads(self.sidecar.read_text())["records"]

    def tasks_of(self, split: str) -> list[str]:
        return json.loads((self.root / "tasks.json").read_text())[split]


def write_world(config: WorldConfig, root: str | Path) -> World:
    """Generate every split and write it under ``root`` (replacing what is there)."""
    config.validate()
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    tasks: dict[str, list[str]] = {}
    sidecar: dict[str, Any] = {}
    for split in SPLITS:
        items = generate_items(config, split)
        records: list[dict[str, Any] | None] = []
        for index, item in enumerate(items):
            if item.pathology == "duplicate":
                records.append(None)  # filled below: byte for byte the record it was copied from
                continue
            image = None
            if item.scene is not None:
                image = f"{item.task}/{split}-{index:06d}.png"
                (root / "images" / item.task).mkdir(exist_ok=True)
                render(item.scene).save(root / "images" / image)
            records.append(item_record(item, image, f"{split}-{index:06d}"))
        for index, item in enumerate(items):
            if item.pathology == "duplicate":
                records[index] = records[item.source]
        _write_json(records, root / f"{split}.json")
        tasks[split] = [item.task for item in items]
        if split == "pool":
            dataset = read_dataset(root / "pool.json", image_root=root / "images", check_images=False)
            keys = [s.key for s in dataset.samples]
            sidecar = {
                "note": "hidden truth of the arena's pool: never read by a selection method",
                "counts": {p: sum(1 for it in items if it.pathology == p) for p in ("clean", *PATHOLOGIES)},
                "records": {
                    keys[i]: {
                        "position": i,
                        "task": item.task,
                        "pathology": item.pathology,
                        "source": keys[item.source] if item.source is not None else None,
                    }
                    for i, item in enumerate(items)
                },
            }
    (root / "tasks.json").write_text(json.dumps(tasks))
    (root / "pathologies.json").write_text(json.dumps(sidecar, indent=1))
    return World(root)


def tree_digest(root: str | Path) -> str:
    """One hash over every file's relative path and bytes (to check byte-identical regeneration)."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
