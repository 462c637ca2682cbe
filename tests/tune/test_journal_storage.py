"""The batched journal storage writes what Optuna's own writes, in fewer appends, and any read sees it all."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tune.journal_storage import BatchedJournalStorage
from tune.runner import trial_slots


def _run(storage: JournalStorage, batched: bool) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    block = storage.batch() if batched else None
    if block is not None:
        block.__enter__()
    for step in range(1, 6):
        trial.report(step / 10, step)
    trial.set_user_attr("epoch", 5)
    if block is not None:
        block.__exit__(None, None, None)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study


def test_a_batch_writes_the_same_trial_in_one_append(tmp_path: Path) -> None:
    plain = _run(JournalStorage(JournalFileBackend(str(tmp_path / "plain.journal"))), batched=False)
    backend = JournalFileBackend(str(tmp_path / "batched.journal"))
    appends: list[int] = []
    append = backend.append_logs
    backend.append_logs = lambda logs: (appends.append(len(logs)), append(logs))[1]  # type: ignore[method-assign]
    batched = _run(BatchedJournalStorage(backend), batched=True)
    assert 6 in appends  # five intermediate values and the user attribute, one write
    again = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "batched.journal"))))
    for study in (batched, again):
        trial, want = study.trials[0], plain.trials[0]
        assert trial.intermediate_values == want.intermediate_values
        assert trial.user_attrs == want.user_attrs and trial.params == want.params
        assert trial.state == want.state


def test_a_read_inside_a_batch_sees_the_writes_held_back(tmp_path: Path) -> None:
    storage = BatchedJournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    with storage.batch():
        trial.report(0.5, 1)
        assert study.trials[0].intermediate_values == {1: 0.5}


def test_trial_slots_are_what_the_cluster_holds_at_once() -> None:
    assert trial_slots(64, 0, 1, 0) == 64
    assert trial_slots(64, 0, 2, 0) == 32
    assert trial_slots(16, 8, 1, 0.5) == 16
    assert trial_slots(16, 2, 1, 0.5) == 4
    assert trial_slots(64, 0, 1, 0, max_concurrent=3) == 3
    assert trial_slots(0.5, 0, 1, 0) == 1
