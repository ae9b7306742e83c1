"""The arena's configuration: the world (sizes, task mix, pathology rates) and the training protocol.

A config file is TOML, JSON or YAML with up to two tables, ``[world]`` and ``[training]``; every key
is optional and defaults to the values below (the default arena). The same config and seed always
produce byte-identical data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TASKS = ("color", "shape", "count", "position", "caption", "digit", "arithmetic")
PATHOLOGIES = ("duplicate", "near_duplicate", "wrong_answer", "mismatch", "trivial")


@dataclass
class WorldConfig:
    """What the generated dataset looks like.

    ``pool_size`` records in the pool the methods select from; of them, the ``*_rate`` shares carry
    one pathology each (rounded to whole records; the rest are clean). ``task_weights``: relative
    frequency of each task in the pool (task imbalance); the stage-1 set and the test set are
    balanced. ``multi_turn_rate``: share of colour/shape records that ask a second question about the
    same image.
    """

    seed: int = 0
    pool_size: int = 6000
    stage1_size: int = 6000
    test_per_task: int = 100
    task_weights: dict[str, float] = field(
        default_factory=lambda: {"color": 4.0, "shape": 1.0, "count": 1.0, "position": 1.0, "caption": 1.0,
                                 "digit": 1.0, "arithmetic": 1.0}
    )
    duplicate_rate: float = 0.10
    near_duplicate_rate: float = 0.10
    wrong_answer_rate: float = 0.20
    mismatch_rate: float = 0.05
    trivial_rate: float = 0.05
    multi_turn_rate: float = 0.2

    def validate(self) -> None:
        unknown = sorted(set(self.task_weights) - set(TASKS))
        if unknown:
            raise ConfigError(f"world.task_weights: unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
        if not any(w > 0 for w in self.task_weights.values()) or any(w < 0 for w in self.task_weights.values()):
            raise ConfigError("world.task_weights: weights must be >= 0 and at least one > 0")
        rates = [getattr(self, f"{p}_rate") for p in PATHOLOGIES]
        if any(r < 0 for r in rates) or sum(rates) >= 1:
            raise ConfigError(f"world: pathology rates must be >= 0 and sum to less than 1 (got {sum(rates):.3f})")
        if not 0 <= self.multi_turn_rate <= 1:
            raise ConfigError("world.multi_turn_rate must be in [0, 1]")
        for name in ("pool_size", "stage1_size", "test_per_task"):
            if getattr(self, name) < 1:
                raise ConfigError(f"world.{name} must be >= 1")

    def clean(self) -> "WorldConfig":
        """The same world without pathologies (the clean-world full-data reference)."""
        values = asdict(self)
        values.update({f"{p}_rate": 0.0 for p in PATHOLOGIES})
        return WorldConfig(**values)


@dataclass
class TrainingConfig:
    """The reference model and the fine-tuning protocol.

    ``stage1_steps``, ``stage1_batch_size``: from-scratch training of the reference model on the clean
    stage-1 set (once per world; its strength sets how much a subset's quality can show).
    ``steps``: fine-tuning steps from the stage-1 checkpoint for every condition (compute-matched);
    ``epochs`` > 0 switches to epoch-matched runs (steps = epochs x subset size / batch size).
    Schedule: warmup-stable-decay (``warmup`` and ``decay`` are shares of the steps).
    """

    stage1_steps: int = 2500
    stage1_batch_size: int = 64
    stage1_lr: float = 2e-3
    steps: int = 150
    epochs: float = 0.0
    lr: float = 1e-3
    batch_size: int = 32
    warmup: float = 0.05
    decay: float = 0.2
    weight_decay: float = 0.01
    vision_hidden: int = 64
    text_hidden: int = 128
    text_layers: int = 2
    threads: int = 2
    extract_batch_size: int = 64

    def validate(self) -> None:
        if min(self.steps, self.stage1_steps, self.batch_size, self.stage1_batch_size) < 1:
            raise ConfigError("training: steps, stage1_steps, batch_size and stage1_batch_size must be >= 1")
        if self.epochs < 0:
            raise ConfigError("training.epochs must be >= 0 (0: compute-matched fixed steps)")
        if not (0 <= self.warmup < 1 and 0 <= self.decay <= 1 and self.warmup + self.decay <= 1):
            raise ConfigError("training: warmup and decay are shares of the steps and must add up to at most 1")


@dataclass
class ArenaConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"world": asdict(self.world), "training": asdict(self.training)}

    def digest(self, part: str | None = None) -> str:
        payload = self.to_dict() if part is None else self.to_dict()[part]
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table of settings")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    defaults = cls()
    merged = {}
    for name, value in values.items():
        default = getattr(defaults, name)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}: expected a table")
            value = {str(k): float(v) for k, v in value.items()}
        elif isinstance(default, bool) or not isinstance(default, (int, float)):
            pass
        elif isinstance(default, int) and not isinstance(value, bool) and float(value) == int(value):
            value = int(value)
        elif isinstance(default, float) and isinstance(value, (int, float)):
            value = float(value)
        else:
            raise ConfigError(f"{where}.{name}: expected a number, got {value!r}")
        merged[name] = value
    return cls(**merged)


def config_from_dict(values: dict[str, Any], source: str = "config") -> ArenaConfig:
    unknown = sorted(set(values) - {"world", "training"})
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {unknown}; expected [world] and/or [training]")
    config = ArenaConfig(
        world=_build(WorldConfig, values.get("world", {}), f"{source}: world"),
        training=_build(TrainingConfig, values.get("training", {}), f"{source}: training"),
    )
    config.world.validate()
    config.training.validate()
    return config


def load_config(path: str | Path | None) -> ArenaConfig:
    """Read a TOML / JSON / YAML arena config; ``None``: the default arena."""
    if path is None:
        return config_from_dict({})
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif suffix == ".json":
            values = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files are .toml, .json or .yaml")
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{path}: cannot parse ({type(err).__name__}: {err})") from None
    return config_from_dict(values, str(path))
