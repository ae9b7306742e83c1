"""The arena: which selection trains the better model, measured end to end and offline.

Generates a visual-instruction world with known truth and injected pathologies, trains a small
LLaVA reference model, extracts features from it and selects with every method through the public
``extract``/``select`` API, fine-tunes from the reference checkpoint on each subset and scores a
clean held-out test set. See ``docs/arena.md``.
"""

from .config import ArenaConfig, TrainingConfig, WorldConfig, load_config
from .runner import run_arena
from .world import World, write_world

__all__ = ["ArenaConfig", "TrainingConfig", "World", "WorldConfig", "load_config", "run_arena", "write_world"]
