"""How much each DataTailor variant and ablation changes the selection (not a test).

Runs the default (official-code) DataTailor and every variant on a features directory, or on the
parity fixture of the tests when none is given, and prints per variant the share of the default
selection it keeps (|variant ∩ default| / |default|).

    python benchmarks/datatailor_variants.py [--features DIR] [--budget 0.15]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mmselect.features.store import FeatureSet
from mmselect.methods import get_method

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "datatailor_official" / "case1"

VARIANTS = {
    "uniqueness=paper": {"uniqueness": "paper"},
    "representativeness=paper": {"representativeness": "paper"},
    "threshold_space=dsse": {"threshold_space": "dsse"},
    "normalize=minmax": {"normalize": "minmax"},
    **{f"ablate={name}": {"ablate": [name]} for name in
       ("informativeness", "uniqueness", "representativeness", "round_weights", "task_ratio")},
}


def fixture_features() -> FeatureSet:
    arrays = {name: np.load(FIXTURE / f"{name}.npy") for name in ("last_token", "sve", "tau", "task", "rounds")}
    return FeatureSet.from_arrays(
        tasks=[str(t) for t in arrays["task"]],
        columns={"sve": arrays["sve"], "sv_top_ratio": arrays["tau"], "rounds": arrays["rounds"]},
        arrays={"last_token": arrays["last_token"]},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--features", type=Path, default=None)
    parser.add_argument("--budget", default="0.15")
    args = parser.parse_args()
    features = FeatureSet.load(args.features) if args.features else fixture_features()
    default = get_method("datatailor").select(features, args.budget).selected
    rows = {"n": int(features.n), "selected": int(default.sum())}
    for label, params in VARIANTS.items():
        selected = get_method("datatailor", **params).select(features, args.budget).selected
        rows[label] = round(float((selected & default).sum() / max(1, default.sum())), 3)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
