"""A pack: several student configurations of one shape trained as one batched model of configurations x seeds.

Configurations of one *shape* (``shape_of``: everything but the settings a member may hold as a tensor:
the student's optimizer within one update rule, learning rate and schedule, weight decay, and the KD
method's alpha, temperature and tau_max) train as one seed-batched model whose K x S members are
configuration-major (member k * S + s is configuration k's seed s). Every member starts from its seed's
initial weights, shuffles and augments from its seed's generators and trains on its seed's fold, so it
receives what the configuration's seed would alone; per-member learning rates and weight decays go through
``kdcore.optimizers.MemberOptimizer`` and alpha, temperature and annealing's phi through the losses as
(M,) tensors. On the CPU a packed configuration gives the figures it gives alone bit for bit (tests hold
them together); on a GPU to float rounding.

After each evaluation every configuration is reported on its own (``PackReportFn``); one the caller prunes
(ASHA), one whose seeds all stalled (patience) and one whose loss became NaN leave the pack: its members are
cut out of the model, the optimizer and the data, and cost nothing from then on. A pack of one is the
configuration trained by ``kdcore.student.train_student``, today's path.

Methods: ``hinton`` (alpha = 0 members train on hard labels, as alone), ``annealing`` and ``none`` pack;
``simkd`` trains one configuration at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from kdcore import batching, losses, members
from kdcore.batching import SeedModel
from kdcore.config import ExperimentConfig
from kdcore.errors import ConfigError, TrainingError
from kdcore.loop import BatchLoss, Phase, SelectLoss, run_phase
from kdcore.optimizers import MemberOptimizer, family
from kdcore.prepared import Prepared, Subset, task_of
from kdcore.result import EpochReport, FitResult
from kdcore.schedules import annealing_phi, lr_at
from kdcore.student import train_student
from kdcore.teachers import Targets, teacher_targets

# The settings a member holds as a tensor; every other setting is the pack's shape.
MEMBER_SETTINGS = {
    "student": ("optimizer", "lr", "weight_decay", "schedule", "step_size", "milestones", "gamma", "max_lr",
                "cycle_epochs", "pct_start"),
    "kd": ("alpha", "temperature", "tau_max"),
}
PACKED_METHODS = ("hinton", "annealing", "none")

# Configuration k's report after an evaluation -> False to prune it (anything else: it goes on).
PackReportFn = Callable[[int, EpochReport], Any]


def shape_of(config: ExperimentConfig) -> str:
    """What configurations of one pack must share, as a canonical string: the whole configuration but the
    member settings (``MEMBER_SETTINGS``), with the optimizer kept as its update rule (Adam = AdamW)."""
    data = config.to_dict()
    for part, keys in MEMBER_SETTINGS.items():
        data[part] = {k: v for k, v in data[part].items() if k not in keys}
    data["student"]["update_rule"] = family(config.student.optimizer)
    return json.dumps(data, sort_keys=True, default=str)


def check_pack(configs: Sequence[ExperimentConfig]) -> None:
    """ConfigError (one line) unless ``configs`` can train as one pack."""
    if not configs:
        raise ConfigError("a pack needs at least one configuration, but got none")
    if len(configs) > 1 and configs[0].kd.method not in PACKED_METHODS:
        raise ConfigError(f"kd.method {configs[0].kd.method!r} trains one configuration at a time; packs serve "
                          f"{list(PACKED_METHODS)}")
    if len(configs) > 1 and getattr(configs[0].kd, "targets", "batch") != "batch":
        raise ConfigError("kd.targets 'variants' (teacher logits looked up in tables) trains one configuration "
                          "at a time; a pack runs its teachers on each augmented batch (kd.targets: batch)")
    shape = json.loads(shape_of(configs[0]))
    for i, config in enumerate(configs[1:], start=1):
        other = json.loads(shape_of(config))
        if other != shape:
            raise ConfigError(f"the configurations of a pack must share one shape, but configuration {i} differs "
                              f"from configuration 0 in {_first_difference(shape, other)}")


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    """The dotted path of the first setting where two configurations' dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return where


@dataclass(frozen=True)
class PackOutcome:
    """How one configuration of a pack ended: COMPLETE (``result``: its selected weights and metrics, and
    ``result.history`` every evaluation), PRUNED (the caller stopped it after ``epochs`` epochs) or ERROR."""

    status: str
    result: FitResult | None = None
    error: str | None = None
    epochs: int = 0
    history: tuple[EpochReport, ...] = field(default_factory=tuple)


class _Pruned(Exception):
    """A pack of one, stopped by its report function."""


def train_pack(prep: Prepared, configs: Sequence[ExperimentConfig], teachers: Sequence[SeedModel] | None,
               on_epoch: PackReportFn | None = None) -> list[PackOutcome]:
    """Train ``configs`` (one shape) as one pack on ``prep`` (prepared for their seeds) and the task's
    ``teachers`` (of those seeds, or None when no configuration learns from them); one outcome each."""
    check_pack(configs)
    if len(configs) == 1:
        return [_alone(prep, configs[0], teachers, on_epoch)]
    pack = _Pack(prep, configs, teachers, on_epoch)
    try:
        METHOD_TRAINERS[configs[0].kd.method](pack)
    except TrainingError as exc:  # the whole batch failed (e.g. an update overflowed): every member with it
        pack.fail_all(str(exc))
    return [pack.outcomes[k] for k in range(len(configs))]


def _alone(prep: Prepared, config: ExperimentConfig, teachers: Sequence[SeedModel] | None,
           on_epoch: PackReportFn | None) -> PackOutcome:
    """A pack of one: the configuration trained exactly as ``train_student`` trains it."""
    history: list[EpochReport] = []

    def report(r: EpochReport) -> None:
        history.append(r)
        if on_epoch is not None and on_epoch(0, r) is False:
            raise _Pruned

    try:
        result = train_student(prep, config, teachers if config.kd.uses_teachers else None, report)
    except _Pruned:
        return PackOutcome("PRUNED", epochs=history[-1].epoch, history=tuple(history))
    except TrainingError as exc:
        return PackOutcome("ERROR", error=str(exc), epochs=history[-1].epoch if history else 0,
                           history=tuple(history))
    return PackOutcome("COMPLETE", result, epochs=result.epochs_run, history=tuple(history))


def _per_member(values: Sequence[float], seeds: int) -> torch.Tensor:
    """One float64 value per member from one per configuration."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64).repeat_interleave(seeds)


class _Pack:
    """The members of a pack while it trains: which are live, their settings and data cut to them, and each
    configuration's reports and outcome (``kdcore.loop.Members``)."""

    def __init__(self, prep: Prepared, configs: Sequence[ExperimentConfig],
                 teachers: Sequence[SeedModel] | None, on_epoch: PackReportFn | None) -> None:
        self.prep, self.configs, self.on_epoch = prep, tuple(configs), on_epoch
        self.teachers = () if teachers is None else tuple(teachers)
        self.first = configs[0]
        self.n_seeds = len(self.first.seeds)
        self.live = np.arange(len(configs) * self.n_seeds)  # the original members still training
        self.start = time.perf_counter()
        self.histories: list[list[EpochReport]] = [[] for _ in configs]
        self.outcomes: dict[int, PackOutcome] = {}
        self._leaving: list[tuple[int, str, str | None]] = []  # (configuration, status, error), in member order
        self._phase_results: list[dict[int, FitResult]] = []  # per phase: configuration -> its outcome there
        self._views: dict[str, Any] = {}  # cut to the live members; emptied when members leave
        self._targets: dict[str, Targets] = {}  # the teachers' targets of every seed, made once
        self.model: SeedModel | None = None  # the live members' model after the last phase
        self.kinds = [c.student.optimizer for c in configs]
        self.alpha = _per_member([c.kd.alpha for c in configs], self.n_seeds)
        self.temperature = _per_member([c.kd.temperature for c in configs], self.n_seeds)

    # --- the live members ------------------------------------------------------------------------------------
    @property
    def config_of(self) -> np.ndarray:
        """The configuration of each live member."""
        return self.live // self.n_seeds

    def view(self, key: str, make: Callable[[torch.Tensor], Any]) -> Any:
        """``make(index of the live members' seeds)``, made once per set of live members."""
        if key not in self._views:
            self._views[key] = make(torch.as_tensor(self.live % self.n_seeds))
        return self._views[key]

    def setting(self, values: torch.Tensor) -> torch.Tensor:
        """A per-member setting (over every original member) cut to the live members."""
        return values[torch.as_tensor(self.live)]

    def part(self, name: str) -> Subset:
        """The fit, select or holdout set of the live members (each its seed's fold)."""
        return self.view(name, lambda seeds: members.subset(getattr(self.prep, name), seeds))  # type: ignore[no-any-return]

    def targets(self, name: str) -> Targets:
        """The teachers' targets on the fit or select set, for the live members."""
        if name not in self._targets:
            self._targets[name] = teacher_targets(task_of(self.prep, self.first), self.teachers,
                                                  getattr(self.prep, name))
        return self.view(name + "_targets", lambda seeds: members.targets(self._targets[name], seeds))  # type: ignore[no-any-return]

    def batch_targets(self, idx: torch.Tensor, x: torch.Tensor) -> Targets:
        """The routed teachers' targets for the batch ``idx`` (M, B): rows of the fit set's when batches are
        not augmented, else the live members' teachers run on the augmented batch ``x``."""
        if not self.first.student.augments:
            return self.targets("fit").rows(idx)
        train = self.part("fit")
        models = self.view("teachers", lambda seeds: [members.take(t, seeds) for t in self.teachers])
        return teacher_targets(task_of(self.prep, self.first), models,
                               Subset(x, train.take(train.y, idx), train.take(train.d, idx)))

    # --- kdcore.loop.Members -----------------------------------------------------------------------------------
    def optimizer(self, model: SeedModel) -> Any:
        fit = self.first.student
        params = [p for p in model.parameters() if p.requires_grad]
        live = self.config_of[:: self.n_seeds]
        return MemberOptimizer(params, np.repeat([self.kinds[k] for k in live], self.n_seeds).tolist(),
                               np.repeat([self.configs[k].student.weight_decay for k in live],
                                         self.n_seeds).tolist(), momentum=fit.momentum, nesterov=fit.nesterov)

    def set_lr(self, optimizer: Any, step: int, steps_per_epoch: int, total_steps: int) -> None:
        rates = [lr_at(self.configs[k].student, step, steps_per_epoch, total_steps)
                 for k in self.config_of[:: self.n_seeds]]
        optimizer.set_lr(_per_member(rates, self.n_seeds))

    def keep(self, report: EpochReport, stalled: np.ndarray, failed: np.ndarray) -> np.ndarray | None:
        keep = np.ones(len(self.live), dtype=bool)
        for start in range(0, len(self.live), self.n_seeds):
            k, at = int(self.config_of[start]), slice(start, start + self.n_seeds)
            if failed[at].any():
                bad = [self.first.seeds[i] for i in np.flatnonzero(failed[at])]
                self._leave(keep, at, k, "ERROR", f"{report.method}: loss became NaN or infinite at epoch "
                                                  f"{report.epoch} (seeds {bad})")
                continue
            mine = EpochReport(report.method, report.epoch, report.inner_acc[at], report.inner_loss[at],
                               report.holdout_acc[at], report.holdout_loss[at])
            self.histories[k].append(mine)
            if self.on_epoch is not None and self.on_epoch(k, mine) is False:
                self._leave(keep, at, k, "PRUNED", None)
            elif stalled[at].all():
                self._leave(keep, at, k, "STALLED", None)
        return None if keep.all() else keep

    def _leave(self, keep: np.ndarray, at: slice, k: int, status: str, error: str | None) -> None:
        keep[at] = False
        self._leaving.append((k, status, error))

    def shrink(self, model: SeedModel, optimizer: Any, index: torch.Tensor) -> None:
        members.keep_(model, index)
        optimizer.select(index, [p for p in model.parameters() if p.requires_grad])

    def take(self, model: SeedModel, index: torch.Tensor) -> SeedModel:
        return members.take(model, index)

    def subset(self, part: Subset, index: torch.Tensor) -> Subset:
        return members.subset(part, index)

    def left(self, result: FitResult) -> None:
        """The members that left: each configuration's outcome (a stalled one is done with this phase)."""
        leaving, self._leaving = self._leaving, []
        for i, (k, status, error) in enumerate(leaving):
            at = np.arange(i * self.n_seeds, (i + 1) * self.n_seeds)
            if status == "STALLED":
                self._phase_results[-1][k] = _slice(result, at)
            else:
                self._end(k, status, error)
        gone = {k for k, _, _ in leaving}
        self.live = self.live[~np.isin(self.config_of, list(gone))]
        self._views = {}

    def _end(self, k: int, status: str, error: str | None) -> None:
        history = tuple(self.histories[k])
        self.outcomes[k] = PackOutcome(status, error=error, epochs=history[-1].epoch if history else 0,
                                       history=history)

    def fail_all(self, error: str) -> None:
        for k in sorted(set(self.config_of.tolist())):
            if k not in self.outcomes:
                self._end(k, "ERROR", error)

    # --- phases ------------------------------------------------------------------------------------------------
    def new_model(self) -> SeedModel:
        seeds = self.first.seeds * len(self.configs)
        return batching.batched(self.first.student.model_spec, self.prep.input_shape, self.prep.n_classes,
                                seeds).to(self.prep.device)

    def fit(self, model: SeedModel, batch_loss: BatchLoss, select_loss: SelectLoss,
            **changes: Any) -> dict[int, FitResult]:
        """One phase of every live configuration: each one's outcome of it (those that left early too)."""
        self._phase_results.append({})
        phase = Phase.of("student", model, self.first.student, batch_loss, select_loss,
                         eval_every=self.first.eval_every, classes=range(self.prep.n_classes), members=self,
                         **changes)
        result = run_phase(phase, self.part("fit"), self.part("select"), self.part("holdout"))
        done = self._phase_results[-1]
        self.model = None if result is None else result.model
        if result is not None:  # the members that trained to the phase's end
            for i, k in enumerate(self.config_of[:: self.n_seeds]):
                done[int(k)] = _slice(result, np.arange(i * self.n_seeds, (i + 1) * self.n_seeds))
        return done

    def complete(self, results: dict[int, FitResult]) -> None:
        """Configurations that ended their last phase: COMPLETE with their outcome of it."""
        for k, result in results.items():
            if k in self.outcomes:
                continue
            seconds = time.perf_counter() - self.start
            history = tuple(self.histories[k])
            self.outcomes[k] = PackOutcome("COMPLETE", replace(result, history=list(history), seconds=seconds),
                                           epochs=result.epochs_run, history=history)


def _slice(result: FitResult, at: np.ndarray) -> FitResult:
    """The members ``at`` of a phase's result (one configuration's seeds)."""
    index = torch.as_tensor(at)
    return replace(result, seeds=tuple(result.seeds[i] for i in at), inner_acc=result.inner_acc[at],
                   inner_loss=result.inner_loss[at], holdout_acc=result.holdout_acc[at],
                   holdout_loss=result.holdout_loss[at], best_epoch=result.best_epoch[at],
                   model=members.take(result.model, index), history=[],
                   class_acc=None if result.class_acc is None else result.class_acc[at])


# --- the methods, packed ----------------------------------------------------------------------------------------
def _select_ce(pack: _Pack) -> SelectLoss:
    def select_loss(logits: torch.Tensor) -> torch.Tensor:
        select = pack.part("select")
        return losses.cross_entropy(logits, select.y, select.weight)

    return select_loss


def _hard_labels(pack: _Pack) -> BatchLoss:
    def batch_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int, x: torch.Tensor) -> torch.Tensor:
        train = pack.part("fit")
        return losses.cross_entropy(logits, train.take(train.y, idx))

    return batch_loss


def _none(pack: _Pack) -> None:
    pack.complete(pack.fit(pack.new_model(), _hard_labels(pack), _select_ce(pack)))


def _hinton(pack: _Pack) -> None:
    """Hinton KD per member (``kdcore.distillers.hinton``); alpha = 0 members add 0 * KD to their CE."""
    if not any(c.kd.uses_teachers for c in pack.configs):
        return _none(pack)

    def batch_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int, x: torch.Tensor) -> torch.Tensor:
        t, train = pack.batch_targets(idx, x), pack.part("fit")
        return losses.subset_hinton_kd(logits, t.logits, t.mask, t.weight, train.take(train.y, idx),
                                       pack.setting(pack.alpha), pack.setting(pack.temperature))

    pack.complete(pack.fit(pack.new_model(), batch_loss, _select_ce(pack)))
    return None


def _annealing(pack: _Pack) -> None:
    """Annealing KD per member (``kdcore.distillers.annealing``): phase 1 with each member's tau_max, phase
    2 on hard labels from each member's best phase-1 weights."""
    kd = pack.first.kd
    tau = [c.kd.tau_max for c in pack.configs]

    def phase1_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int, x: torch.Tensor) -> torch.Tensor:
        phi = _per_member([annealing_phi(epoch, epochs=kd.anneal_epochs, tau_max=tau[k])
                           for k in pack.config_of[:: pack.n_seeds]], pack.n_seeds)
        full = pack.batch_targets(idx, x).logits[:, :, 0]
        return losses.annealing_mse(logits, losses.annealing_target(full, phi))

    def phase1_select(logits: torch.Tensor) -> torch.Tensor:
        return losses.annealing_mse(logits, pack.targets("select").logits[:, :, 0], pack.part("select").weight)

    first = pack.fit(pack.new_model(), phase1_loss, phase1_select, epochs=kd.anneal_epochs, patience=None,
                     restore_best=True)
    if pack.model is None:  # every configuration left during phase 1
        return
    offset = max(r.epochs_run for r in first.values())  # phase 1 has no early stopping: every one ran all
    pack.complete(pack.fit(pack.model, _hard_labels(pack), _select_ce(pack), epoch_offset=offset))


METHOD_TRAINERS: dict[str, Callable[[_Pack], None]] = {"hinton": _hinton, "annealing": _annealing, "none": _none}

