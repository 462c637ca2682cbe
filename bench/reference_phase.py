"""The reference phase (mixed baseline + teachers) of a study: as kdtune runs it, and as it used to run.

- ``ray``: kdtune's way (``tune.reference.run_jobs``): the baseline and each teacher its own Ray task with
  one trial's resources (1 CPU, ``torch.set_num_threads(1)``), in parallel where there are CPUs.
- ``driver``: the old way: baseline then teachers in the driver process with torch's default threads
  (one per core), as before issue 11.

Each is timed on a quiet machine and again with two busy background processes (pure Python spin loops,
what "other jobs on the machine" look like), side by side in one run; a fresh study folder each time,
so the teacher cache never hits.

    python bench/reference_phase.py [--data builtin:d0.5] [--space default] [--repeats 1] [--smoke-test]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` processes that each keep a core busy for the duration."""
    procs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.5 if n else 0.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.join()


def planned(storage: Path, name: str, data: str, space: str) -> tuple[object, object]:
    from tune.plan import SearchSettings, plan_study
    from tune.study import create_study

    paths, meta = plan_study(SearchSettings(data=data, space=space, name=name, storage=storage, num_samples=1))
    with create_study(paths, meta, "maximize"):
        pass
    return paths, meta


def ray_way(paths: object, meta: object) -> float:
    from tune.plan import RunOptions
    from tune.reference import reference_jobs, run_jobs

    start = time.perf_counter()
    run_jobs(paths, meta, reference_jobs(meta, set()), label="references",  # type: ignore[arg-type]
             options=RunOptions(quiet=True))
    return time.perf_counter() - start


def driver_way(paths: object, meta: object) -> float:
    import torch

    import kdcore
    from kdcore import TeacherCache, prepare, train_baseline
    from search_spaces import parse_space

    torch.set_num_threads(os.cpu_count() or 1)  # torch's own default: every core, in the driver
    config = parse_space(meta.space_text).base  # type: ignore[attr-defined]
    dataset = kdcore.load_data(meta.data)  # type: ignore[attr-defined]
    start = time.perf_counter()
    prep = prepare(dataset, config, "cpu")
    train_baseline(prep, config)
    TeacherCache(paths.teachers).get_or_train(prep, config, dataset.fingerprint())  # type: ignore[attr-defined]
    took = time.perf_counter() - start
    torch.set_num_threads(1)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin:d0.5")
    parser.add_argument("--space", default="default")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smoke-test", action="store_true", help="the 5-epoch smoke space, one repeat")
    args = parser.parse_args()
    space = "smoke" if args.smoke_test else args.space
    from tune import cluster
    from tune.cluster import ClusterSpec

    cores = os.cpu_count() or 1
    print(f"reference phase (baseline + teachers), space {space}, data {args.data}, {cores} cores; seconds")
    handle = cluster.start(ClusterSpec())
    times: dict[tuple[str, int], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="kdt-refbench-") as tmp:
            # Ray's first tasks start their worker processes: paid once per study, shown apart.
            warm = ray_way(*planned(Path(tmp), "warm-up", args.data, space))
            print(f"  ray, first run (starts the workers; not counted below): {warm:.1f} s", flush=True)
            for rep in range(1 if args.smoke_test else args.repeats):
                for load in (0, 2):
                    for way, fn in (("ray", ray_way), ("driver", driver_way)):
                        paths, meta = planned(Path(tmp), f"{way}-{load}-{rep}", args.data, space)
                        with busy(load):
                            took = fn(paths, meta)
                        times.setdefault((way, load), []).append(took)
                        print(f"  {way:<6} with {load} busy processes: {took:7.1f} s", flush=True)
    finally:
        handle.stop()
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    print(f"{'':<8}{'quiet':>10}{'2 busy':>10}{'busy / quiet':>14}")
    for way in ("ray", "driver"):
        print(f"{way:<8}{mean[(way, 0)]:>10.1f}{mean[(way, 2)]:>10.1f}{mean[(way, 2)] / mean[(way, 0)]:>14.2f}")
    print(f"driver / ray: quiet {mean[('driver', 0)] / mean[('ray', 0)]:.2f}, "
          f"2 busy {mean[('driver', 2)] / mean[('ray', 2)]:.2f}")


if __name__ == "__main__":
    main()
