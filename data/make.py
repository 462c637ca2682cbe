"""Write a built-in dataset as a reference-format pickle: ``python data/make.py builtin:d0.5 out.pkl``."""

from __future__ import annotations

import pickle
import sys

import kdcore


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python data/make.py builtin:dD OUT.pkl")
    dataset = kdcore.load_data(sys.argv[1])
    arrays = {key: getattr(dataset, key) for key in kdcore.ARRAY_KEYS}
    with open(sys.argv[2], "wb") as fh:
        pickle.dump(arrays, fh, protocol=3)
    print(f"{sys.argv[2]}: {dataset.source}, sha256 {dataset.fingerprint()}")


if __name__ == "__main__":
    main()
