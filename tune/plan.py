"""A study's plan: ``kdtune search``'s settings checked, and the ``StudyMeta`` they make, without Ray.

Everything here is cheap (no Ray, no torch): the command line runs it before the heavy imports, so a bad
number, name or path is refused in a fraction of a second, not after Ray's import.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import kdcore
from kdcore import KDCoreError, one_line
from search_spaces import SpaceError, load_space
from tune.cluster import ClusterSpec
from tune.errors import KDTuneError
from tune.faults import writable_folder
from tune.study import StudyMeta, StudyPaths, check_name, is_unborn

SAMPLER_NAMES = ("tpe", "random")  # tune.runner.SAMPLERS (the CLI's --sampler): TPE and random search

DEFAULT_REDUCTION_FACTOR = 2  # ASHA keeps the better half at its rung (see default_grace)


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``kdtune search`` takes."""

    data: str
    space: str
    name: str
    storage: Path
    num_samples: int
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    seed: int = 0
    grace_period: int | None = None  # None: two thirds of the student's evaluations (``default_grace``)
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR
    max_t: int | None = None
    max_failures: int = 2
    tune_baseline: int = 0
    sampler: str = "tpe"
    num_cpus: int | None = None  # a local Ray's CPUs (default: every core); not with ``address``
    pruning: bool = True  # False (--no-pruning): no ASHA rung, every trial runs to its end

    def __post_init__(self) -> None:
        check_name(self.name)
        checks = [
            (self.num_samples >= 1, f"--num-samples must be >= 1, but got {self.num_samples}"),
            (self.max_concurrent is None or self.max_concurrent >= 1,
             f"--max-concurrent must be >= 1, but got {self.max_concurrent}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, but got {self.cpus_per_trial}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, but got {self.gpus_per_trial}"),
            (self.grace_period is None or self.grace_period >= 1,
             f"--grace-period must be >= 1, but got {self.grace_period}"),
            (self.reduction_factor >= 2, f"--reduction-factor must be >= 2, but got {self.reduction_factor}"),
            (self.max_t is None or self.max_t >= (self.grace_period or 1),
             f"`max_t >= grace_period` must hold, but got max_t={self.max_t}, grace_period={self.grace_period}"),
            (self.max_failures >= 0, f"--max-failures must be >= 0, but got {self.max_failures}"),
            (self.tune_baseline >= 0, f"--tune-baseline must be >= 0, but got {self.tune_baseline}"),
            (self.sampler in SAMPLER_NAMES, f"--sampler must be one of {list(SAMPLER_NAMES)}, but got {self.sampler!r}"),
            (self.num_cpus is None or self.num_cpus < 1 or self.cpus_per_trial <= self.num_cpus,
             f"`--cpus-per-trial <= --num-cpus` must hold, but got {self.cpus_per_trial:g} > {self.num_cpus}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KDTuneError(message)
        self.run_options()  # the cluster's and retries' own checks

    def run_options(self, *, stream: TextIO | None = None, quiet: bool = False, verbose: bool = False) -> RunOptions:
        return RunOptions(ClusterSpec(self.address, self.num_cpus), self.max_failures, stream, quiet, verbose)


def max_evaluations(space: Any) -> int:
    """ASHA's ``max_t``: ``trial_evaluations`` and two of slack, so that it never cuts a trial's last report."""
    return trial_evaluations(space) + 2


def trial_evaluations(space: Any) -> int:
    """The most evaluations any trial of ``space`` makes in the phase its objective measures (each method's
    last; ``kdcore.METHODS[m].phase_epochs`` says how many epochs each phase lasts at most): what ASHA counts."""
    from types import SimpleNamespace

    from kdcore import METHODS

    base = space.base
    knobs = {knob.path: knob for knob in space.knobs}
    epochs = max(base.student.epochs, int(max(knobs["student.epochs"].extremes())) if "student.epochs" in knobs else 0)
    method_knob = knobs.get("kd.method")
    methods = dict.fromkeys((base.kd.method, *(method_knob.choices if method_knob is not None else ())))

    def most(method: str, name: str, fixed: Any) -> Any:
        # A kd setting's top when it is sampled, its fixed value when it is not. A knob sampled whenever
        # this method runs (no condition, or only that one) always replaces the fixed value; under any other
        # condition both can occur.
        knob = knobs.get(f"kd.{name}")
        if knob is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in knob.extremes()):
            return fixed
        if all(c.path == "kd.method" and method in c.values for c in knob.when):
            return int(max(knob.extremes()))
        return max(int(max(knob.extremes())), fixed)

    every = base.eval_every
    # ASHA counts the evaluations of the phase the objective measures (each method's last), so that every
    # method is judged at the same point of its own schedule (``kdcore.evaluations_before_measured_phase``).
    phases = [METHODS[m].phase_epochs(SimpleNamespace(**{k: most(m, k, v) for k, v in base.kd.to_dict().items()}),
                                      epochs) for m in methods]
    return max(math.ceil(p[-1] / every) for p in phases)


# What the rung and max_t count, in the study's record (``StudyMeta.asha_counts``), for the report to say.
ASHA_COUNTS = "evaluations of the student's last phase (the one the objective measures)"


def default_grace(space: Any) -> int:
    """ASHA's (only) rung: two thirds of the evaluations of the space's fixed student epochs.

    Measured (``bench/selection.py``, README "Selection and pruning, measured"): Ray's rungs at 20, 60 and
    180 of 200 evaluations stopped 4.1 of a 48-trial study's final top 5 (cyclic and one-cycle schedules
    improve late); a third of the run still lost 2.3; one rung at two thirds, keeping the better half
    (``DEFAULT_REDUCTION_FACTOR``) by best-so-far values, lost 0.3 and ran 80 % of the evaluations.
    """
    base = space.base
    return max(1, 2 * math.ceil(base.student.epochs / base.eval_every) // 3)



SELF_DISTILLATION = ("the data has one group and the task names no teachers, so its one teacher learns from the "
                     "same data as the baseline (self-distillation); name class-subset teachers under `task:` "
                     "to distil from experts")


def self_distillation(config: Any, n_groups: int) -> bool:
    """Whether ``config``'s one teacher learns from the same data as the baseline: the default task (one
    teacher per group) on data of one group, and a KD method that learns from teachers."""
    from kdcore import METHODS

    return n_groups == 1 and config.task.is_default and METHODS[config.kd.method].uses_teachers(config.kd)


def evaluation_sizes(config: Any, dataset: Any) -> dict[str, Any]:
    """How many points the figures rest on: the holdout (the given validation set; one point is 1 / that of
    the holdout accuracy) and each seed's inner selection set (its fold, the inner split, or, under protocol
    seed, the validation set again), in the order of ``config.seeds``."""
    import numpy as np

    from kdcore import inner_folds, inner_split

    holdout = int(dataset.y_valid.size)
    if config.protocol == "seed":
        inner = [holdout] * len(config.seeds)
    elif config.inner == "split":
        inner = [int(inner_split(dataset, config.inner_fraction, config.split_seed).select.size)] * len(config.seeds)
    else:
        folds = inner_folds(dataset, config.n_folds, config.split_seed)
        sizes = np.bincount(folds, minlength=config.n_folds)
        inner = [int(sizes[config.fold_of(j)]) for j in range(len(config.seeds))]
    per_class = [int(c) for c in np.bincount(dataset.y_valid, minlength=dataset.n_classes)]
    return {"holdout_points": holdout, "holdout_class_points": per_class, "inner_points_per_seed": inner,
            "seeds": list(config.seeds)}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(dist) for name, dist in
            (("kdtune", "kdtune"), ("torch", "torch"), ("ray", "ray"), ("optuna", "optuna"))}


def check_task(config: Any, dataset: Any, *, absolute: bool = True, methods: tuple[str, ...] = ()) -> None:
    """Refuse, before anything runs, a task the data cannot serve: a bad subset layout (kdcore.task.resolve),
    a KD method (the config's, and ``methods`` a space may sample) that cannot distil it, a teacher
    checkpoint that is relative (trials run in other folders and on other nodes), missing, or that does not
    fit its architecture."""
    import numpy as np

    from kdcore import METHODS, check_coverage, check_method, resolve_task

    cells = np.stack([np.concatenate([dataset.y_train, dataset.y_valid]),
                      np.concatenate([dataset.d_train, dataset.d_valid])], axis=1)
    task = resolve_task(config.task, config.teacher, dataset.n_classes, dataset.n_domains, cells)
    folds = config.n_folds if config.protocol == "honest" and config.inner == "folds" else 2
    check_coverage(task, dataset.y_train, dataset.d_train, dataset.y_valid, dataset.d_valid, folds)
    sampled = tuple(dict.fromkeys((config.kd.method, *methods)))
    for method in sampled:
        check_method(task, method, config.student.model)
    for method in sampled:  # e.g. SimKD's networks must have feature maps: it builds one of each (imports torch)
        METHODS[method].check_models(config, task, tuple(dataset.x_train.shape[1:]), dataset.n_classes)
    for teacher in task.teachers:
        if teacher.checkpoint is None:
            continue
        if absolute and not Path(teacher.checkpoint).is_absolute():
            raise KDTuneError(f"{teacher.name}: checkpoint {teacher.checkpoint!r} must be an absolute path in a "
                              "search space (trials run in other folders and on other nodes)")
        from kdcore import load_teacher

        load_teacher(teacher, tuple(dataset.x_train.shape[1:]), (0,))


def check_gpus(gpus_per_trial: float, address: str | None, flag: str = "--gpus-per-trial") -> None:
    """A GPU request on a local Ray is refused before Ray starts (seconds, not Ray's start-up) when torch sees
    no CUDA device here; a cluster (``address``) is asked once it is joined (``tune.runner``)."""
    if gpus_per_trial <= 0 or address is not None:
        return
    import torch

    if not torch.cuda.is_available():
        raise KDTuneError(f"{flag} {gpus_per_trial:g} asks for a GPU per trial, but this machine has no CUDA device "
                          "torch can use; leave it at 0, or join a cluster that has GPUs with --address HOST:PORT")


def plan_study(settings: SearchSettings) -> tuple[StudyPaths, StudyMeta]:
    """Validate every input and describe the study; writes nothing (``run_study`` writes once Ray is up)."""
    paths = StudyPaths(settings.storage.expanduser().resolve() / settings.name)
    if paths.root.exists() and not is_unborn(paths):
        raise KDTuneError(f"study {paths.root} already exists; continue it with `kdtune resume {paths.root}` "
                          "or choose another --name")
    if paths.storage.exists() and not paths.storage.is_dir():
        raise KDTuneError(f"--storage {paths.storage} is a file, not a folder")
    unwritable = writable_folder(paths.storage)
    if unwritable is not None:  # a read-only mount or a forbidden folder: refused before Ray starts
        raise KDTuneError(f"--storage {paths.storage}: {unwritable}; give a folder this machine can write")
    space = load_space(settings.space)
    check_gpus(settings.gpus_per_trial, settings.address)
    if settings.tune_baseline:
        try:
            space.without_kd()
        except SpaceError as exc:
            raise KDTuneError(f"--tune-baseline {settings.tune_baseline}: the space without its kd.* knobs is no "
                              f"search space ({exc})") from None
    spec = kdcore.data_spec(settings.data)  # absolute, a CIFAR folder's normalisation named
    dataset = kdcore.load_data(spec)
    sampled = tuple(str(c) for k in space.knobs if k.path == "kd.method" for c in getattr(k, "choices", ()))
    try:
        check_task(space.base, dataset, methods=sampled)
    except (KDCoreError, KDTuneError) as exc:
        if not space.data or space.data == settings.data:
            raise
        raise KDTuneError(f"the space {space.name!r} was written for --data {space.data}, and {settings.data} "
                          f"does not fit it: {one_line(exc)}") from None
    from kdcore import resolve_task

    base = space.base
    task = resolve_task(base.task, base.teacher, dataset.n_classes, dataset.n_domains).describe()
    max_t = settings.max_t or max_evaluations(space)
    length = min(max_t, trial_evaluations(space))
    if settings.grace_period is not None and settings.grace_period >= length:
        what = (f"--max-t {max_t}" if length == max_t and settings.max_t else
                f"the trial's length, {length} evaluations of the student's last phase")
        raise KDTuneError(
            f"--grace-period {settings.grace_period} is at or beyond {what}: ASHA would never compare trials and "
            f"nothing would be pruned; give a grace period below {length} (the default, two thirds of the "
            f"student's evaluations, is {default_grace(space)}), or --no-pruning to run every trial to its end")
    if not settings.pruning and settings.grace_period is not None:
        raise KDTuneError(f"--no-pruning runs every trial to its end, so it takes no --grace-period, but got "
                          f"--grace-period {settings.grace_period}")
    grace = max_t if not settings.pruning else min(settings.grace_period or default_grace(space), max_t)
    meta = StudyMeta(
        name=settings.name, data=spec, data_source=dataset.source, fingerprint=dataset.fingerprint(),
        space_name=space.name, space_text=space.source_text, num_samples=settings.num_samples,
        seed=settings.seed, max_t=max_t, grace_period=grace,  # grace == max_t: no rung (results.asha)
        reduction_factor=settings.reduction_factor, cpus_per_trial=settings.cpus_per_trial,
        gpus_per_trial=settings.gpus_per_trial, max_concurrent=settings.max_concurrent or 0,
        versions=_versions(), tune_baseline=settings.tune_baseline, sampler=settings.sampler,
        task=task, input_shape=list(dataset.feature_shape), asha_counts=ASHA_COUNTS,
        self_distillation=dataset.n_domains == 1 and base.task.is_default,
        evaluation_sizes=evaluation_sizes(base, dataset),
    )
    return paths, meta




@dataclass(frozen=True)
class RunOptions:
    """How one run of a study goes, as opposed to what the study is (``StudyMeta``): where Ray runs,
    how often a trial whose worker died is retried, and what the terminal shows."""

    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    max_failures: int = 2
    stream: TextIO | None = None  # progress and notes (default stderr)
    quiet: bool = False  # no progress line
    verbose: bool = False  # a line per finished trial

    def __post_init__(self) -> None:
        if self.max_failures < 0:
            raise KDTuneError(f"--max-failures must be >= 0, but got {self.max_failures}")

    def say(self, text: str) -> None:
        """A line on the progress stream (not with ``quiet``)."""
        if not self.quiet:
            out = self.stream if self.stream is not None else sys.stderr
            out.write(text + "\n")
            out.flush()
