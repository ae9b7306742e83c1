"""Pin every model preset to the commit its Hugging Face repository's default branch points at now.

Run on a machine with hub access, review the diff, commit ``src/mmselect/models/revisions.json``::

    python scripts/pin_revisions.py            # all presets
    python scripts/pin_revisions.py --check    # exit 1 if a preset is unpinned or moved on the hub
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mmselect.models.registry import PRESETS, REVISIONS_FILE, load_revisions  # noqa: E402


def resolve_commits(hf_ids: list[str], api=None) -> dict[str, str]:
    """HF id -> the commit of its default branch."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    return {hf_id: api.model_info(hf_id).sha for hf_id in hf_ids}


def main(argv: list[str] | None = None, api=None, path: Path = REVISIONS_FILE) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the hub, write nothing")
    args = parser.parse_args(argv)
    hf_ids = sorted({p.hf_id for p in PRESETS.values() if not p.tiny})
    current = resolve_commits(hf_ids, api)
    pinned = load_revisions(path)
    changed = {h: (pinned.get(h), sha) for h, sha in current.items() if pinned.get(h) != sha}
    for hf_id, (old, new) in changed.items():
        print(f"{hf_id}: {old or 'unpinned'} -> {new}")
    if args.check:
        return 1 if changed else 0
    path.write_text(json.dumps({**pinned, **current}, indent=2, sort_keys=True) + "\n")
    print(f"{len(current)} presets pinned in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
