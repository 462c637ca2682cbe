"""A study folder, ``DIR/NAME/``: what it holds and its ``study.json``.

```
DIR/NAME/
  study.json          kdtune's record of the study: data, space (as written), budget, ASHA, seed
  optuna.journal      the Optuna study NAME (JournalFileBackend): any Optuna tool opens it
  teachers/           teacher cache shared by every trial (kdcore.teacher_cache)
  results/            Parquet tables (results package)
  experiment_state-*  Ray Tune's experiment state, and one t_<id>/ folder per trial
```
Paths inside ``study.json`` are absolute: Ray Tune changes a trial's working directory.

A study folder is born whole (``create_study``): ``study.json`` and the Optuna study are written into a
hidden folder beside it, which is then renamed into place, so from the moment ``DIR/NAME`` exists
``kdtune resume`` can finish it, whenever it was interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdcore import write_atomic
from search_spaces import SearchSpace, parse_space
from tune.errors import KDTuneError
from tune.journal import corrupt_line, repair_tail

STUDY_FILE = "study.json"
LOCK_FILE = ".driver.lock"
FORMAT = 2
JOURNAL_FILE = "optuna.journal"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class StudyPaths:
    """Where everything of one study lives."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def storage(self) -> Path:
        return self.root.parent

    @property
    def meta(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL_FILE

    @property
    def teachers(self) -> Path:
        return self.root / "teachers"

    @property
    def results(self) -> Path:
        return self.root / "results"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise KDTuneError(
            f"study name must be 1-64 letters, digits, '_', '.' or '-' (not starting with '.', '_' or '-'), "
            f"but got {name!r}"
        )
    return name


@dataclass(frozen=True)
class StudyMeta:
    """The study's own record, written once at creation (and its budget raised by ``resume --more``)."""

    name: str
    data: str  # "builtin:d0.5", an absolute file path, or a CIFAR folder's with its normalisation named
    data_source: str
    fingerprint: str
    space_name: str
    space_text: str
    num_samples: int
    seed: int
    max_t: int
    grace_period: int
    reduction_factor: int
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT  # 2: kdcore's measured defaults and per-seed folds; a format-1 study meant other settings
    references: bool = True  # train the baseline, teachers and the best trial's ablation (not for ce-baseline)
    tune_baseline: int = 0  # trials of the CE-only baseline search in DIR/NAME/ce-baseline (0: none)
    sampler: str = "tpe"  # tune.plan.SAMPLER_NAMES (tune.runner.SAMPLERS)
    # What the data made of the space's task at plan time (kdcore.task.Task.describe()) and one sample's
    # feature shape, for the tables' metadata; None in a study of an older kdtune.
    task: dict[str, Any] | None = None
    input_shape: list[int] | None = None
    # What ASHA's rung (grace_period) and max_t count (tune.plan.ASHA_COUNTS); None: a study of an older
    # kdtune, whose ASHA counted every evaluation, the phases before the measured one included.
    asha_counts: str | None = None
    # The default task on data of one group: the one teacher learns from the baseline's data (tune.plan).
    self_distillation: bool = False
    # {"holdout_points": n, "inner_points_per_seed": [...], "seeds": [...]} (tune.plan.evaluation_sizes): what
    # one point of holdout or inner accuracy is worth; None in a study of an older kdtune.
    evaluation_sizes: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, paths: StudyPaths) -> StudyMeta:
        if not paths.meta.is_file():
            if paths.root.is_dir():
                raise KDTuneError(f"{paths.root} is not a kdtune study (no {STUDY_FILE} in it)")
            raise KDTuneError(f"no study at {paths.root}")
        try:
            data: dict[str, Any] = json.loads(paths.meta.read_text())
            meta = cls(**data)
            meta = dataclasses.replace(meta, data=recorded_data(meta.data))
        except (ValueError, TypeError) as exc:
            raise KDTuneError(f"{paths.meta} is damaged ({exc}); it is not a readable kdtune study record")
        if meta.format < FORMAT:
            # Its space names only what it fixed; kdcore's defaults (recipe, inner folds) filled the rest then
            # and fill it differently now, so continuing or re-training it would not be the same study.
            raise KDTuneError(f"{paths.root} was made by an older kdtune (study format {meta.format}, this one "
                              f"writes {FORMAT}) whose defaults differ; start a new study, or use that kdtune")
        return meta

    def write(self, paths: StudyPaths) -> None:
        write_atomic(paths.meta, self.to_json().encode())

    def space(self, paths: StudyPaths | None = None) -> SearchSpace:
        """The study's search space, from the text it was planned with; an error in it names ``paths``'
        ``study.json`` when given (else the study's name)."""
        return parse_space(self.space_text, source=f"{paths.meta if paths else self.name}:space")


def recorded_data(spec: str) -> str:
    """The data spec that loads what a study's record meant: ``spec`` itself, except a CIFAR folder recorded
    without its normalisation, which only a kdtune from before the literature's constants became the default
    wrote; that kdtune standardised with the training images' statistics, so its trials, a resume and
    ``train --from`` load ``FOLDER:normalise=computed`` (the same arrays, the same fingerprint)."""
    from kdcore.sources import split_options

    if spec.startswith("builtin:") or split_options(spec)[1] or not Path(spec).is_dir():
        return spec
    return f"{spec}:normalise=computed"


@contextlib.contextmanager
def _locked(folder: Path, busy: str) -> Iterator[None]:
    with open(folder / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KDTuneError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def driver_lock(paths: StudyPaths) -> Iterator[None]:
    """Hold the study's driver lock: one kdtune process drives a study at a time (released if it dies)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with _locked(paths.root, f"study {paths.root} is being run by another kdtune process; wait for it to end "
                             "(or stop it) before resuming"):
        yield


def is_unborn(paths: StudyPaths) -> bool:
    """An existing ``DIR/NAME`` that holds no study: empty, or only a driver lock an older kdtune left."""
    return paths.root.is_dir() and {p.name for p in paths.root.iterdir()} <= {LOCK_FILE}


@contextlib.contextmanager
def create_study(paths: StudyPaths, meta: StudyMeta, direction: str) -> Iterator[None]:
    """Create the study folder whole, holding its driver lock for the ``with`` body.

    ``study.json`` and the Optuna study (with ``optuna_attrs``) are written into a hidden sibling folder
    that is renamed to ``DIR/NAME`` once complete; the lock, taken on the hidden folder's lock file, stays
    held across the rename (it belongs to the open file, which moves with its folder).
    """
    paths.storage.mkdir(parents=True, exist_ok=True)
    staging = paths.storage / f".{paths.name}.creating-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        with _locked(staging, f"study {paths.root} is being created by another kdtune process"):
            inside = StudyPaths(staging)
            meta.write(inside)
            ensure_optuna_study(inside, meta, direction)
            if is_unborn(paths):  # moved aside first: never rmtree a path another creator may fill
                aside = staging.with_name(staging.name + ".old")
                os.rename(paths.root, aside)
                shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(staging, paths.root)
            except OSError:
                raise KDTuneError(f"study {paths.root} already exists; continue it with "
                                  f"`kdtune resume {paths.root}` or choose another --name") from None
            yield
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only if the rename did not happen


def journal_storage(paths: StudyPaths) -> Any:
    """The study's Optuna storage: the journal file ``DIR/NAME/optuna.journal`` (imports optuna, never Ray).

    A torn last line (a driver killed mid-write, a full disk) is first set aside into a side file and the
    journal cut to its last whole line (``tune.journal.repair_tail``), and one line on stderr says so. Its
    ``batch()`` writes a trial's intermediate values and user attributes in one append
    (``tune.journal_storage``)."""
    from optuna.storages.journal import JournalFileBackend

    from tune.journal_storage import BatchedJournalStorage

    message = repair_tail(paths.journal)
    if message is not None:
        print(f"kdtune: {message}", file=sys.stderr, flush=True)
    return BatchedJournalStorage(JournalFileBackend(str(paths.journal)))


@contextlib.contextmanager
def _readable_journal(paths: StudyPaths) -> Iterator[None]:
    """A journal Optuna cannot parse is one line naming its first bad line (``tune.journal.corrupt_line``)."""
    try:
        yield
    except ValueError:  # json.JSONDecodeError, or Optuna's "Invalid log format."
        error = corrupt_line(paths.journal) if paths.journal.is_file() else None
        if error is None:
            raise
        raise error from None


def optuna_attrs(meta: StudyMeta) -> dict[str, Any]:
    """What the Optuna study says about itself (``study.user_attrs``), so that optuna-dashboard or any
    Optuna tool shows a study's trials with their context: data, fingerprint, protocol, space, objective."""
    space = meta.space()
    base = space.base
    return {
        "kdtune_study": meta.name, "data": meta.data, "data_source": meta.data_source,
        "fingerprint": meta.fingerprint, "protocol": base.protocol,
        "inner": base.inner if base.protocol == "honest" else "given validation set",
        "space_name": meta.space_name, "objective": space.objective.to_dict(), "sampler": meta.sampler,
        "seeds": list(base.seeds), "num_samples": meta.num_samples,
        "kdtune_version": meta.versions.get("kdtune", ""),
    }


def ensure_optuna_study(paths: StudyPaths, meta: StudyMeta, direction: str) -> Any:
    """Create (or open) the study's Optuna study and (re)write its ``optuna_attrs``."""
    import optuna

    with _readable_journal(paths):
        study = optuna.create_study(study_name=meta.name, storage=journal_storage(paths),
                                    direction=direction,  # type: ignore[arg-type] # "maximize" or "minimize"
                                    load_if_exists=True)
    for key, value in optuna_attrs(meta).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def load_optuna_study(paths: StudyPaths, meta: StudyMeta | None = None) -> Any:
    """The study's Optuna study (``meta``: the study's record, read from ``paths`` when not given); one line
    if there is no journal (nothing is written, not even an empty one)."""
    import optuna

    if not paths.journal.is_file():
        raise KDTuneError(f"{paths.root} has no {paths.journal.name}: it is not a kdtune study with trials")
    meta = meta or StudyMeta.read(paths)
    try:
        with _readable_journal(paths):
            return optuna.load_study(study_name=meta.name, storage=journal_storage(paths))
    except KeyError:
        raise KDTuneError(f"{paths.journal} holds no Optuna study named {meta.name!r}") from None
