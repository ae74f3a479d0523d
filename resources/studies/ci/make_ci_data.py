"""Writes mnist-900.npz, the CI-sized slice of the demo data the paper-protocol
studies' `--scale ci` runs on (run from the repository root):

    .venv/bin/python resources/studies/ci/make_ci_data.py

Every 10th training digit of resources/demo/mnist10k.npz's recorded split (600),
every 10th validation digit (100) and every 15th test digit (200), in that order, with
that split recorded (train_idx 0..600, val_idx 600..700, test_idx 700..900). The demo
data is sorted by class, so every class keeps its share. The demo models trained on
the whole training split, so the slice's training digits are members and its
validation and test digits non-members, as in the full data.
"""

import sys
from pathlib import Path

import numpy as np

root = Path(__file__).resolve().parents[3]
src = np.load(root / "resources/demo/mnist10k.npz")
rows = np.concatenate(
    [src["train_idx"][::10][:600], src["val_idx"][::10][:100], src["test_idx"][::15][:200]]
)
assert len(rows) == 900, len(rows)
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "mnist-900.npz"
np.savez_compressed(
    out,
    x=src["x"][rows],
    y=src["y"][rows],
    train_idx=np.arange(0, 600, dtype=np.int64),
    val_idx=np.arange(600, 700, dtype=np.int64),
    test_idx=np.arange(700, 900, dtype=np.int64),
    source_rows=rows.astype(np.int64),
)
print(f"wrote {out} ({out.stat().st_size} bytes)")
