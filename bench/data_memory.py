"""Peak memory of preparing CIFAR-10-sized data (50,000 + 10,000 images of 3x32x32, float32) for five
seeds under the folds protocol: how many copies of the features training holds.

    python bench/data_memory.py [--train 50000] [--seeds 5]

Prints the process's peak resident memory after the data is made (one copy of the features, plus the
holdout) and after ``kdcore.prepare``, and the ratio of what ``prepare`` added to one copy of the training
features. Run it in a fresh process (peak RSS only grows).
"""

from __future__ import annotations

import argparse
import resource

import numpy as np

from kdcore import ClassificationData, ExperimentConfig, prepare


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n_valid = args.train // 5
    x = rng.standard_normal((args.train + n_valid, 3, 32, 32), dtype=np.float32)
    y = np.arange(args.train + n_valid) % 10
    data = ClassificationData.from_arrays({"x_train": x[:args.train], "y_train": y[:args.train],
                                           "x_valid": x[args.train:], "y_valid": y[args.train:]})
    del x
    one_copy = data.x_train.nbytes / 2**20
    before = peak_mb()
    prepare(data, ExperimentConfig(seeds=tuple(range(args.seeds))))
    after = peak_mb()
    print(f"training features, one copy: {one_copy:.0f} MB; peak after the data: {before:.0f} MB; "
          f"after prepare ({args.seeds} seeds, folds): {after:.0f} MB")
    print(f"prepare added {after - before:.0f} MB = {(after - before) / one_copy:.2f} copies of the training features")


if __name__ == "__main__":
    main()
