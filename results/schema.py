"""The Parquet tables of a study: names, columns, types and units.

Each table is ``DIR/NAME/results/<table>.parquet``, a symlink to a folder of Parquet files, every file in
the table's full schema below (``results.writer`` keeps it, appending at a cost independent of the study's
size; a reader that lists it sees each row exactly once); a study of an older kdtune has one Parquet file
there instead. The study's metadata is ``results/_study.json`` (``study.json`` in older studies) and, under
the key ``kdtune.study``, in every file's key-value metadata.

Accuracies are fractions in 0..1, losses are mean cross-entropy in nats, times are seconds. ``_mean`` and
``_std`` are over seeds (std is the sample std, ddof=1). "inner" is the selection set: the inner split of
the training set under the honest protocol, the given validation set under the seed protocol; "holdout" is
the given validation set (reported, never used to choose anything under the honest protocol).

trials (one row per trial)
    study str, trial_id str (Ray Tune id), number int64 (Optuna trial number),
    status str (COMPLETE | PRUNED | ERROR), error str (message, ERROR rows only),
    param_<knob> one typed column per knob of the space (dots become '__': ``param_kd__alpha``),
        null where the knob was inactive,
    inner_acc_mean, inner_acc_std, holdout_acc_mean, holdout_acc_std, inner_loss_mean, holdout_loss_mean
        float64, at the selected epoch (COMPLETE) or at the last evaluation (PRUNED),
    best_epoch float64 (seed mean), epochs_run int64, iterations int64 (evaluations reported),
    student_params int64 (trainable parameters of one student network, everything the trial trains: the
        architecture can be a knob; under SimKD the student's encoder plus its projector; null where the
        trial did not report it: PRUNED and ERROR trials, studies of an older kdtune),
    projector_params int64 (the part of ``student_params`` that is SimKD's projector; null without one:
        every other method, and where ``student_params`` is null),
    head str (the classifier every metric of the trial is measured through: ``student``, or under SimKD
        ``teacher classifier (reused, frozen)``, whose parameters ``student_params`` leaves out; null where
        not reported),
    wall_seconds float64, teacher_cache_hit bool, node str (Ray node id, 12 hex), hostname str, device str,
    started_at, ended_at timestamp[us, UTC] (the trial's start on its worker, and its last evaluation)
epochs (one row per trial and evaluation)
    study, trial_id, number, iteration int64, epoch int64,
    inner_acc_mean, inner_loss_mean, holdout_acc_mean, holdout_loss_mean float64,
    started_at, ended_at timestamp[us, UTC] (from the previous evaluation, or the trial's start, to this one)
seeds (one row per trial and seed)
    study, trial_id, number, seed int64, inner_acc, holdout_acc float64,
    inner_loss, holdout_loss float64 (null for PRUNED trials: only accuracies are reported per epoch),
    best_epoch int64 (null for PRUNED),
    holdout_class_acc list<float64> (holdout accuracy per class, element c for global class c of 0..C-1;
        an element is null where the holdout set has no sample of that class; the whole cell is null for
        PRUNED trials and in studies of an older kdtune)
reference (one row per reference method and seed)
    study, method str, seed int64, trial_number int64, inner_acc, holdout_acc, inner_loss,
    holdout_loss float64, best_epoch int64,
    params int64 (trainable parameters of one network of the method),
    classes list<int64> (the global class of each of the method's outputs: 0..C-1, or a teacher's S_k in the
        order of its outputs), holdout_class_acc list<float64> (holdout accuracy per class, in the order of
        ``classes``; an element is null where the holdout set has no sample of that class).
    Methods: ``baseline`` (one network on every sample, with the space's fixed baseline settings) and
    ``teacher_K`` (teacher K of the task, trained and measured, inner and holdout, on the samples of its
    own classes, and of its group if it has one, only, in its own label space), trained once before the
    trials; ``ablation``, the best trial (``trial_number``) retrained without its KD term (a student with
    its own classifier, hard labels only), same recipe and seeds, replaced whenever the best trial
    changes; ``tuned_baseline``, the best trial (``trial_number``) of the CE-only search that
    ``--tune-baseline N`` runs in ``DIR/NAME/ce-baseline`` (``params`` from that trial's Optuna user
    attributes, null when its search was run by an older kdtune; ``classes`` every class).
    ``params``, ``classes`` and ``holdout_class_acc`` are null in studies of an older kdtune.

The study's metadata (``_study.json``, and the key ``kdtune.study`` of every file) holds the data (``data``,
``data_source``, ``fingerprint``), the search space's text (``space``), the protocol, seeds and objective,
the versions, and (absent from the metadata of a study of an older kdtune):
    task     the task resolved against the data at plan time (``kdcore.task.Task.describe()``): ``routing``,
             ``n_classes`` C, ``n_groups``, ``shared_classes`` (the classes more than one teacher knows), and
             ``teachers``, one ``{name, classes, group, checkpoint, model}`` per teacher, ``name`` being the
             reference table's method
    models   ``{"baseline", "teacher", "student"}``: each the model spec (``kdcore.config.ModelSpec``:
             ``name, hidden, batch_norm, channels, width, depth``) of the space's fixed settings, with
             ``params``, the trainable parameters of one network for the data's input shape: an int for the
             baseline and the student (C outputs); for the teacher a list, one per teacher of ``task``
             (its own model overrides, ``len(classes)`` outputs). A searched architecture's size, and a SimKD
             student's projector, are per trial: the trials table's ``student_params``, ``projector_params``.

Nulls: ``number`` is null for a trial the searcher did not propose; rows that ``kdtune resume`` rebuilt
from the Optuna study (the driver died between telling Optuna and writing) have ``epoch`` and the
holdout/loss columns of ``epochs`` null. pandas reads a nullable int64 column holding nulls as float64,
and a list cell as a numpy array (null elements as NaN) or None. A table written by an older kdtune gets
the columns it lacks, all null, when this kdtune first writes to it.
Under annealing KD, epochs count phase 1 and phase 2 together (``epochs_run = anneal_epochs + phase 2``).
A categorical knob whose choices mix types is a string column holding each value's text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

TABLES = ("trials", "epochs", "seeds", "reference")
STATUSES = ("COMPLETE", "PRUNED", "ERROR")
METADATA_KEY = b"kdtune.study"

_ID = [("study", pa.string()), ("trial_id", pa.string()), ("number", pa.int64())]
_F = pa.float64()
_UTC = pa.timestamp("us", tz="UTC")
_PER_CLASS = pa.list_(_F)  # one accuracy per class; an element is null where the holdout lacks the class

TRIAL_METRICS = [
    ("inner_acc_mean", _F), ("inner_acc_std", _F), ("holdout_acc_mean", _F), ("holdout_acc_std", _F),
    ("inner_loss_mean", _F), ("holdout_loss_mean", _F), ("best_epoch", _F), ("epochs_run", pa.int64()),
    ("iterations", pa.int64()), ("student_params", pa.int64()), ("projector_params", pa.int64()),
    ("head", pa.string()), ("wall_seconds", _F),
    ("teacher_cache_hit", pa.bool_()), ("node", pa.string()),
    ("hostname", pa.string()), ("device", pa.string()), ("started_at", _UTC), ("ended_at", _UTC),
]
EPOCH_COLUMNS = [*_ID, ("iteration", pa.int64()), ("epoch", pa.int64()), ("inner_acc_mean", _F),
                 ("inner_loss_mean", _F), ("holdout_acc_mean", _F), ("holdout_loss_mean", _F),
                 ("started_at", _UTC), ("ended_at", _UTC)]
SEED_COLUMNS = [*_ID, ("seed", pa.int64()), ("inner_acc", _F), ("holdout_acc", _F), ("inner_loss", _F),
                ("holdout_loss", _F), ("best_epoch", pa.int64()), ("holdout_class_acc", _PER_CLASS)]
REFERENCE_COLUMNS = [("study", pa.string()), ("method", pa.string()), ("seed", pa.int64()),
                     ("trial_number", pa.int64()), ("inner_acc", _F), ("holdout_acc", _F), ("inner_loss", _F),
                     ("holdout_loss", _F), ("best_epoch", pa.int64()), ("params", pa.int64()),
                     ("classes", pa.list_(pa.int64())), ("holdout_class_acc", _PER_CLASS)]


def param_column(path: str) -> str:
    """``kd.alpha`` -> ``param_kd__alpha``: a name every SQL engine takes unquoted."""
    return "param_" + path.replace(".", "__")


def param_type(kind: str, choices: Iterable[Any] = ()) -> pa.DataType:
    """Arrow type of a knob: float and int knobs as numbers; categorical by the type of its choices."""
    if kind == "float":
        return _F
    if kind == "int":
        return pa.int64()
    values = [c for c in choices if c is not None]
    if values and all(isinstance(c, bool) for c in values):
        return pa.bool_()
    if values and all(isinstance(c, int) and not isinstance(c, bool) for c in values):
        return pa.int64()
    if values and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in values):
        return _F
    return pa.string()


def trials_schema(params: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """The trials table for a space whose knobs are ``params`` (path, arrow type), in knob order."""
    fields = [*_ID, ("status", pa.string()), ("error", pa.string())]
    fields += [(param_column(path), kind) for path, kind in params]
    return pa.schema(fields + TRIAL_METRICS)


def fixed_schema(table: str) -> pa.Schema:
    return pa.schema({"epochs": EPOCH_COLUMNS, "seeds": SEED_COLUMNS, "reference": REFERENCE_COLUMNS}[table])


def class_acc_cell(values: Iterable[Any] | None) -> list[float | None] | None:
    """A ``holdout_class_acc`` cell from a summary's per-class list: floats, None (or NaN) elements null; the
    whole cell null when nothing was measured (``kdcore.result.FitResult.summary`` gives an empty list then)."""
    if values is None:
        return None
    cell = [None if v is None or math.isnan(v) else float(v) for v in values]
    return cell or None
