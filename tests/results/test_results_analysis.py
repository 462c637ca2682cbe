"""``results.report.analyse``: the numbers, report and plots of a study, from its Parquet tables alone.

Studies are built here from synthetic rows written with ``results.writer.StudyTables`` (real search-space
text in the metadata); one slow test runs a real ``kdtune search`` and analyses it. The figures are computed
and their files written as always, but matplotlib draws nothing (``_sketches``): one test,
``test_every_plot_is_drawn_as_a_png``, draws every plot.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from results import plots
from results.errors import ResultsError
from results.importance import (
    MIN_IMPORTANCE_TRIALS,
    compare_rankings,
    param_importance,
    variance_explained,
)
from results.plots import PLOT_FILES
from results.report import analyse
from results.schema import TABLES, param_column, param_type
from results.stats import paired_test, sample_std, sign_flip_p_value, spearman, t_interval
from results.study_data import StudyData
from results.writer import StudyTables
from search_spaces import parse_space

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [0, 10, 1234, 99, 2021]
BASELINE = {0: 0.90, 10: 0.91, 1234: 0.92, 99: 0.93, 2021: 0.94}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------- drawing stubbed out

class _Sketch:
    """Stands in for a matplotlib figure: ``savefig`` writes a PNG signature and nothing else."""

    def savefig(self, path: Path, format: str) -> None:
        Path(path).write_bytes(PNG_MAGIC)


def _sketch(*args: Any, path: Path, **kwargs: Any) -> Path:
    return plots._save(_Sketch(), path)  # written as a figure is: atomically, with the umask's permissions


DRAWERS = [name for name in dir(plots) if name.startswith("plot_")]


@pytest.fixture(scope="module", autouse=True)
def _sketches() -> Any:
    """Every ``plots.plot_*`` replaced by ``_sketch`` for this module (drawing is most of an analysis's time);
    yields the real functions, which ``real_plots`` puts back for one test."""
    real = {name: getattr(plots, name) for name in DRAWERS}
    with pytest.MonkeyPatch.context() as mp:
        for name in DRAWERS:
            mp.setattr(plots, name, _sketch)
        yield real


@pytest.fixture
def real_plots(_sketches: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, function in _sketches.items():
        monkeypatch.setattr(plots, name, function)


# ------------------------------------------------------------------------------------------ a synthetic study

def _space_text(name: str) -> str:
    return (files("search_spaces") / f"{name}.yaml").read_text(encoding="utf-8")


class FakeStudy:
    """Writes a study folder the way ``kdtune search`` does, with rows chosen by the test."""

    def __init__(self, root: Path, space: str = "smoke", *, asha: bool = True,
                 planned: int | None = None, extra_metadata: dict[str, Any] | None = None,
                 space_text: str | None = None) -> None:
        self.root = root
        self.name = root.name
        text = _space_text(space) if space_text is None else space_text
        self.space = parse_space(text)
        params = [(k.path, param_type(k.kind, getattr(k, "choices", ()))) for k in self.space.knobs]
        metadata = {"study": self.name, "data": "builtin:d0.5", "data_source": "builtin:d0.5",
                    "fingerprint": "f" * 64, "space_name": self.space.name, "space": text,
                    "protocol": "honest",
                    "protocol_note": "honest protocol: selection on an inner split; holdout never chooses",
                    "seeds": SEEDS, "inner_fraction": 0.2, "split_seed": 0,
                    "objective": {"metric": "inner_acc", "mode": "max"}, "versions": {"kdtune": "test"},
                    **(extra_metadata or {})}
        self.tables = StudyTables(root / "results", params, metadata)
        self.tables.write_metadata()
        if asha:
            record = {"name": self.name, "grace_period": 2, "reduction_factor": 3, "max_t": 20,
                      "num_samples": planned or 0}
            (root / "study.json").write_text(json.dumps(record))

    def reference(self, baseline: dict[int, float] = BASELINE) -> None:
        rows = [{"study": self.name, "method": m, "seed": s, "inner_acc": a + 0.01, "holdout_acc": a,
                 "inner_loss": 0.3, "holdout_loss": 0.3, "best_epoch": 10}
                for m, accs in (("baseline", baseline), ("teacher_0", {s: 0.99 for s in baseline}))
                for s, a in accs.items()]
        self.tables.append("reference", rows)

    def trial(self, number: int, status: str, params: dict[str, Any], holdout: dict[int, float],
              inner: float | None = None, iterations: int = 10, epochs_known: bool = True,
              class_acc: dict[int, list[float | None]] | None = None, student_params: int | None = None,
              projector_params: int | None = None, head: str | None = None) -> None:
        tid = f"t{number:04d}"
        ids = {"study": self.name, "trial_id": tid, "number": number}
        h = np.array(list(holdout.values()))
        inner = float(h.mean()) + 0.01 if inner is None else inner
        row = {**ids, "status": status, "error": "boom" if status == "ERROR" else None,
               **{param_column(k.path): params.get(k.path) for k in self.space.knobs},
               "inner_acc_mean": inner, "inner_acc_std": 0.01, "holdout_acc_mean": float(h.mean()),
               "holdout_acc_std": float(h.std(ddof=1)) if h.size > 1 else None, "inner_loss_mean": 0.3,
               "holdout_loss_mean": 0.3, "best_epoch": float(iterations), "epochs_run": iterations,
               "iterations": iterations, "wall_seconds": 1.0, "teacher_cache_hit": True, "node": "n" * 12,
               "hostname": "host", "device": "cpu", "student_params": student_params,
               "projector_params": projector_params, "head": head}
        epochs = [{**ids, "iteration": i, "epoch": i if epochs_known else None, "inner_acc_mean": inner * (0.6 + 0.4 * i / iterations),
                   "inner_loss_mean": 0.5, "holdout_acc_mean": float(h.mean()), "holdout_loss_mean": 0.5}
                  for i in range(1, iterations + 1)]
        complete = status == "COMPLETE"
        seeds = [{**ids, "seed": s, "inner_acc": inner, "holdout_acc": a,
                  "inner_loss": 0.3 if complete else None, "holdout_loss": 0.3 if complete else None,
                  "best_epoch": iterations if complete else None,
                  "holdout_class_acc": (class_acc or {}).get(s)} for s, a in holdout.items()]
        self.tables.record_trial(row, epochs, seeds)


def _shifted(diffs: list[float], base: dict[int, float] = BASELINE) -> dict[int, float]:
    return {s: base[s] + d for s, d in zip(base, diffs)}


def _rich_study(root: Path) -> FakeStudy:
    """Smoke space, 8 COMPLETE trials with known objective order, 4 PRUNED, 1 ERROR."""
    study = FakeStudy(root, planned=15)
    study.reference()
    rng = np.random.default_rng(0)
    for n in range(13):
        status = "PRUNED" if n % 3 == 1 else "COMPLETE"
        status = "ERROR" if n == 12 else status
        alpha = float(rng.uniform(0, 1))
        params = {"kd.alpha": alpha, "kd.temperature": float(np.exp(rng.uniform(0, np.log(20)))),
                  "student.optimizer": "adam" if n % 2 else "adamw"}
        # objective grows with alpha, so the ranking is known: highest alpha first among COMPLETE
        diffs = [0.01 * alpha] * 5 if status == "COMPLETE" else [-0.05] * 5
        study.trial(n, status, params, _shifted(diffs), inner=0.5 + 0.4 * alpha,
                    iterations=10 if status == "COMPLETE" else 2)
    return study


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeStudy, dict[str, Any]]:
    study = _rich_study(tmp_path_factory.mktemp("studies") / "rich")
    return study, analyse(study.root, top_k=3)


# ---------------------------------------------------------------------------------------------- statistics

def test_t_interval_uses_the_published_quantiles() -> None:
    for df, q in ((1, 12.706204736), (4, 2.776445105), (10, 2.228138852), (30, 2.042272456)):
        d = np.linspace(0.0, 0.01, df + 1) ** 2  # any spread: the half-width is q * sd / sqrt(n)
        interval = t_interval(d)
        assert interval is not None
        lo, hi = interval
        assert (lo + hi) / 2 == pytest.approx(d.mean(), abs=1e-15)  # symmetric about the mean
        assert (hi - lo) / 2 == pytest.approx(q * d.std(ddof=1) / math.sqrt(d.size), rel=1e-8)
    cauchy = t_interval([0.0, 1.0])  # df 1 is Cauchy: its 0.975 quantile is tan(0.475 pi)
    assert cauchy is not None
    lo, hi = cauchy
    assert (hi - lo) / 2 == pytest.approx(math.tan(0.475 * math.pi) * math.sqrt(0.5) / math.sqrt(2), rel=1e-10)
    assert t_interval([0.5]) is None


def test_sign_flip_p_values_are_the_hand_counted_ones() -> None:
    # all five differences positive: only "all +" and "all -" are as extreme -> 2 / 32
    assert sign_flip_p_value([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(2 / 32)
    # four +1 and one -1 (|sum| = 3): as extreme when 0, 1, 4 or 5 signs flip -> (1+5+5+1) / 32
    assert sign_flip_p_value([0.01, 0.01, 0.01, 0.01, -0.01]) == pytest.approx(12 / 32)
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_p_value([0.3]) == 1.0
    sampled = sign_flip_p_value([0.01] * 20)  # beyond the exact limit: sampled, never 0
    assert 0 < sampled < 1e-4
    with pytest.raises(ValueError):
        sign_flip_p_value([])


def test_paired_test_pairs_by_seed_and_reports_t_interval() -> None:
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05]
    trial = _shifted(diffs)
    test = paired_test(trial, BASELINE)
    assert test is not None
    assert test.n == 5 and test.p_value == pytest.approx(0.0625)
    assert test.diff_mean == pytest.approx(0.03)
    half = 2.776445105 * float(np.std(diffs, ddof=1)) / math.sqrt(5)
    assert test.ci95 == pytest.approx((0.03 - half, 0.03 + half))
    assert "sign-flip" in test.test and "2^5" in test.test
    # the order of the seeds does not matter, only the pairing; unpaired seeds are left out
    shuffled = dict(reversed(list(trial.items())))
    shuffled[7] = 0.0
    again = paired_test(shuffled, BASELINE)
    assert again is not None and again.n == 5 and again.diff_mean == pytest.approx(0.03)
    assert paired_test({1: 0.5}, BASELINE) is None
    single = paired_test({0: 0.95}, BASELINE)
    assert single is not None and single.ci95 is None and single.p_value == 1.0


def test_one_seed_has_no_spread() -> None:
    assert sample_std([0.9, 0.8, 1.0]) == pytest.approx(0.1)  # ddof 1
    assert sample_std([0.9]) is None and sample_std([]) is None
    assert sample_std([0.9, float("nan")]) is None  # only finite values count


def test_a_one_seed_study_says_so_instead_of_a_zero_spread(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "oneseed", extra_metadata={"seeds": [0]})
    study.reference({0: 0.9})
    for n in range(2):  # the trials table holds a spread for one seed, as tune's recorder writes 0.0 there
        study.trial(n, "COMPLETE", {"kd.alpha": 0.1 * n, "kd.temperature": 2.0, "student.optimizer": "adam"},
                    {0: 0.9 + 0.01 * n})
    result = analyse(study.root)
    assert result["baseline"]["holdout_acc_std"] is None and result["best"]["n_seeds"] == 1
    text = Path(result["report"]).read_text()
    assert "- holdout accuracy 91.00 % (one seed: no spread), mixed baseline 90.00 % (one seed: no spread)" in text
    assert "| baseline | 1 | not recorded | 91.00 % (one seed: no spread) | 90.00 % (one seed: no spread) |" in text
    assert "±" not in text.split("## Top configurations")[1].split("## Data and versions")[0].replace(
        "seed means ± sample sd", "")


# -------------------------------------------------------------------------------------------------- analyse

def test_top_k_is_ranked_by_the_objective(rich: tuple[FakeStudy, dict[str, Any]]) -> None:
    study, result = rich
    trials = pd.read_parquet(study.root / "results" / "trials.parquet")
    done = trials[trials["status"] == "COMPLETE"].sort_values("inner_acc_mean", ascending=False)
    assert [t["number"] for t in result["top"]] == done["number"].head(3).tolist()
    assert [t["rank"] for t in result["top"]] == [1, 2, 3]
    assert result["best"]["number"] == result["top"][0]["number"]
    assert result["trials"] == {"COMPLETE": 8, "PRUNED": 4, "ERROR": 1, "total": 13}
    assert result["planned_trials"] == 15
    objective = [t["inner_acc_mean"] for t in result["top"]]
    assert objective == sorted(objective, reverse=True)


def test_best_compares_with_the_baseline_seed_by_seed(rich: tuple[FakeStudy, dict[str, Any]]) -> None:
    _, result = rich
    best = result["best"]
    alpha = best["params"]["kd.alpha"]
    vs = best["vs_baseline"]
    assert vs["diff_mean"] == pytest.approx(0.01 * alpha)
    assert vs["p_value"] == pytest.approx(0.0625)  # five equal positive differences
    assert vs["ci95"][0] == pytest.approx(vs["ci95"][1])  # no spread in the differences
    assert result["baseline"]["holdout_acc_mean"] == pytest.approx(np.mean(list(BASELINE.values())))
    assert result["baseline"]["n_seeds"] == 5
    json.dumps(result, allow_nan=False)


def test_params_map_back_to_dotted_knob_names(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "conditional", space="default", asha=False)
    study.reference()
    annealing = {"kd.method": "annealing", "kd.tau_max": 13, "kd.anneal_epochs": 64,
                 "student.optimizer": "adam",
                 "student.lr": 0.003, "student.schedule": "cyclic", "student.max_lr": 0.02,
                 "student.cycle_epochs": 10, "student.batch_size": 256, "student.batch_norm": True}
    hinton = {"kd.method": "hinton", "kd.alpha": 0.25, "kd.temperature": 4.0, "student.optimizer": "adamw",
              "student.weight_decay": 1e-4, "student.lr": 0.001, "student.schedule": "constant",
              "student.batch_size": 64, "student.batch_norm": False}
    study.trial(0, "COMPLETE", annealing, _shifted([0.01] * 5), inner=0.97)
    # rebuilt from the Optuna journal by `kdtune resume`: its epoch rows know no epoch
    study.trial(1, "COMPLETE", hinton, _shifted([0.0] * 5), inner=0.95, epochs_known=False)
    result = analyse(study.root, top_k=5)
    best, second = result["top"]
    assert best["params"] == annealing  # inactive knobs (alpha, temperature, ...) are left out
    assert type(best["params"]["kd.tau_max"]) is int  # a nullable int column reads back as float
    assert best["params"]["student.batch_norm"] is True
    assert second["params"] == hinton
    assert all(not k.startswith("param_") and "__" not in k for t in result["top"] for k in t["params"])
    assert result["importance"] is None  # two COMPLETE trials are too few
    assert any("importance" in n for n in result["notes"])
    assert (study.root / "analysis" / "asha_rungs.png").is_file()  # a histogram without study.json
    assert (study.root / "analysis" / "curves.png").read_bytes()[:8] == PNG_MAGIC
    json.dumps(result, allow_nan=False)


def test_importance_is_not_ranked_on_too_few_complete_trials(rich: tuple[FakeStudy, dict[str, Any]]) -> None:
    study, result = rich
    assert result["importance"] is None and result["importance_knobs"] == []
    method = result["importance_method"]
    assert method["n_trials"] == 8 and method["min_trials"] == MIN_IMPORTANCE_TRIALS == 20
    expected = "8 COMPLETE trials with an objective value; importance needs at least 20"
    assert method["note"] == expected
    assert f"parameter importance not computed: {expected}" in result["notes"]
    assert f"Not computed: {expected}." in Path(result["report"]).read_text()
    assert not (study.root / "analysis" / "importance.png").exists()


def test_plots_are_the_ones_the_data_supports(rich: tuple[FakeStudy, dict[str, Any]]) -> None:
    study, result = rich
    out = study.root / "analysis"
    # every plot but importance (8 COMPLETE trials are too few to rank knobs) and accuracy against size (one
    # method, sizes not recorded)
    assert sorted(Path(p).name for p in result["plots"]) == sorted(
        name for key, name in PLOT_FILES.items() if key not in ("importance", "params"))
    for path in result["plots"]:
        assert Path(path).read_bytes()[:8] == PNG_MAGIC, path
        assert Path(path).parent == out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def _every_plot_study(root: Path) -> FakeStudy:
    """Smoke space, ASHA, 24 COMPLETE trials of two sizes whose objective grows with kd.alpha, 3 PRUNED."""
    study = FakeStudy(root)
    study.reference()
    rng = np.random.default_rng(2)
    for n in range(27):
        status = "PRUNED" if n % 9 == 4 else "COMPLETE"
        alpha = float(rng.uniform(0, 1))
        params = {"kd.alpha": alpha, "kd.temperature": float(np.exp(rng.uniform(0, np.log(20)))),
                  "student.optimizer": "adam" if n % 2 else "adamw"}
        study.trial(n, status, params, _shifted([0.01 * alpha] * 5), inner=0.5 + 0.4 * alpha,
                    iterations=10 if status == "COMPLETE" else 2, student_params=1000 + 500 * (n % 2))
    return study


def test_every_plot_is_drawn_as_a_png(tmp_path: Path, real_plots: None) -> None:
    from matplotlib.image import imread

    study = _every_plot_study(tmp_path / "every")
    result = analyse(study.root, top_k=3)
    out = study.root / "analysis"
    assert sorted(Path(p).name for p in result["plots"]) == sorted(PLOT_FILES.values())
    text = Path(result["report"]).read_text()
    for path in map(Path, result["plots"]):
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, path
        assert len(data) > 5000, path
        assert path.parent == out
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path
        assert float(image[..., :3].std()) > 0.01, path  # not a blank canvas
        assert f"]({path.name})" in text
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_report_ties_it_together(rich: tuple[FakeStudy, dict[str, Any]]) -> None:
    study, result = rich
    report = Path(result["report"])
    assert report == study.root / "analysis" / "report.md"
    text = report.read_text()
    best = result["best"]
    assert f"trial #{best['number']}" in text
    assert "honest protocol: selection on an inner split" in text
    assert "sign-flip permutation" in text and "p = 0.0625" in text
    assert "f" * 64 in text  # the data fingerprint
    for key, name in PLOT_FILES.items():
        assert (f"({name})" in text) == (key not in ("importance", "params"))
    assert "| `kd.alpha` |" in text
    assert set(result["tables"]) == set(TABLES)
    assert all(Path(p).is_absolute() and Path(p).exists() for p in result["tables"].values())


def test_interrupted_study_with_only_pruned_trials(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "pruned", planned=10)
    study.reference()
    for n in range(3):
        study.trial(n, "PRUNED", {"kd.alpha": 0.1 * n, "kd.temperature": 2.0, "student.optimizer": "adam"},
                    _shifted([-0.1] * 5), iterations=2)
    out = tmp_path / "elsewhere"
    result = analyse(study.root, out_dir=out)
    assert result["best"] is None and result["top"] == []
    assert result["trials"]["PRUNED"] == 3 and result["trials"]["COMPLETE"] == 0
    assert result["importance"] is None
    assert result["baseline"] is not None
    text = (out / "report.md").read_text()
    assert "No COMPLETE trial yet" in text
    assert "3 of 10 planned trials recorded" in text
    assert {Path(p).name for p in result["plots"]} == {"history.png", "asha_rungs.png"}
    assert not (study.root / "analysis").exists()
    json.dumps(result, allow_nan=False)


def test_a_new_analysis_removes_its_own_stale_plots_only(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "stale")
    study.trial(0, "PRUNED", {"kd.alpha": 0.5, "kd.temperature": 2.0, "student.optimizer": "adam"},
                _shifted([0.0] * 5), iterations=2)
    analyse(study.root)
    stale = study.root / "analysis" / "importance.png"
    stale.write_bytes(PNG_MAGIC)  # as if an earlier analysis had drawn it
    analyse(study.root)
    assert not stale.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "importance.png").write_bytes(b"someone else's figure")
    analyse(study.root, out_dir=foreign)
    assert (foreign / "importance.png").read_bytes() == b"someone else's figure"


def test_study_without_trials_says_so(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "starting")
    study.reference()  # the study has trained its reference models, no trial has ended yet
    result = analyse(study.root)
    assert result["trials"]["total"] == 0 and result["best"] is None and result["plots"] == []
    assert "No trials recorded yet" in Path(result["report"]).read_text()
    assert set(result["tables"]) == {"reference"}


def test_study_without_a_baseline_still_ranks(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "nobase")
    study.trial(0, "COMPLETE", {"kd.alpha": 0.5, "kd.temperature": 2.0, "student.optimizer": "adam"},
                _shifted([0.0] * 5))
    result = analyse(study.root)
    assert result["baseline"] is None
    assert result["best"]["vs_baseline"] is None
    assert any("baseline" in n for n in result["notes"])


def test_not_a_study_raises_results_error(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no study at"):
        analyse(tmp_path / "missing")
    with pytest.raises(ResultsError, match="not a kdtune study"):
        analyse(tmp_path)
    (tmp_path / "results").mkdir()
    with pytest.raises(ResultsError, match="no results yet"):
        analyse(tmp_path)
    FakeStudy(tmp_path / "empty")  # metadata, but no table written yet
    with pytest.raises(ResultsError, match="no tables yet"):
        analyse(tmp_path / "empty")
    with pytest.raises(ResultsError, match="tables folder of a study"):
        analyse(tmp_path / "empty" / "results")
    with pytest.raises(ResultsError, match="top_k"):
        analyse(tmp_path / "empty", top_k=0)
    for message in ("no study", "no tables yet"):
        try:
            analyse(tmp_path / ("missing" if message == "no study" else "empty"))
        except ResultsError as exc:
            assert "\n" not in str(exc)


def test_pandas_and_pyarrow_dataset_read_the_same_rows(rich: tuple[FakeStudy, dict[str, Any]]) -> None:
    _, result = rich
    for table, path in result["tables"].items():
        by_pandas = pd.read_parquet(path)
        by_dataset = ds.dataset(path).to_table().to_pandas()
        assert len(by_pandas) > 0, table
        pd.testing.assert_frame_equal(by_pandas, by_dataset, obj=table)


def test_importing_the_analysis_leaves_ray_out() -> None:
    probe = ("import importlib, json, pkgutil, sys\nimport results\n"
             "for m in pkgutil.iter_modules(results.__path__):\n    importlib.import_module('results.' + m.name)\n"
             "heavy = {'ray', 'matplotlib', 'optuna', 'tune'}\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_asha_rungs_import_nothing_heavy() -> None:
    # tune.scheduler and tune.trainable import results.asha in every Ray worker
    probe = ("import json, sys\nfrom results.asha import asha_rungs\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'numpy', 'scipy'})))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------------------------------------ importance

def _sample(space: Any, rng: np.random.Generator) -> dict[str, Any]:
    """One random configuration of ``space``: each knob drawn uniformly (log-uniformly) where it is active."""
    params: dict[str, Any] = {}
    for knob in space.knobs:
        if not knob.active(params):
            continue
        if knob.kind == "categorical":
            params[knob.path] = knob.choices[int(rng.integers(len(knob.choices)))]
        elif knob.kind == "int":
            params[knob.path] = int(rng.integers(knob.low, knob.high + 1))
        elif knob.log:
            params[knob.path] = float(np.exp(rng.uniform(np.log(knob.low), np.log(knob.high))))
        else:
            params[knob.path] = float(rng.uniform(knob.low, knob.high))
    return params


def _memory_study(space_name: str, n: int, objective: Any, seed: int = 0) -> StudyData:
    """``n`` COMPLETE trials of random configurations scored by ``objective(params, rng)``, in memory."""
    text = _space_text(space_name)
    space = parse_space(text)
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(n):
        params = _sample(space, rng)
        rows.append({"trial_id": f"t{number:04d}", "number": number, "status": "COMPLETE",
                     "inner_acc_mean": float(objective(params, rng)),
                     **{param_column(k.path): params.get(k.path) for k in space.knobs}})
    empty = pd.DataFrame()
    return StudyData(root=Path("/nonexistent"), name="memory", metadata={"space": text}, trials=pd.DataFrame(rows),
                     epochs=empty, seeds=empty, reference=empty, tables={}, space=space)


def _alpha_drives(params: dict[str, Any], rng: np.random.Generator) -> float:
    return 0.5 + 0.4 * params["kd.alpha"] + rng.normal(0.0, 0.01)


def _noise(params: dict[str, Any], rng: np.random.Generator) -> float:
    return 0.5 + rng.normal(0.0, 0.01)


def test_importance_below_the_minimum_says_how_many_trials_it_needs() -> None:
    study = _memory_study("smoke", 19, _alpha_drives)
    importance = param_importance(study)
    assert importance.values is None and importance.knobs == () and importance.agreement is None
    assert importance.note == "19 COMPLETE trials with an objective value; importance needs at least 20"
    assert param_importance(study, min_trials=10).values is not None


def test_a_knob_that_drives_the_objective_ranks_first_with_a_tight_interval() -> None:
    importance = param_importance(_memory_study("smoke", 40, _alpha_drives, seed=1))
    assert importance.values is not None
    assert next(iter(importance.values)) == "kd.alpha"
    assert sum(importance.values.values()) == pytest.approx(1.0)
    alpha, *others = importance.knobs
    assert alpha.path == "kd.alpha" and alpha.importance > 0.9
    assert alpha.low is not None and alpha.high is not None and alpha.low > 0.6
    assert all(k.high is not None and k.high < alpha.low for k in others)
    assert importance.separated is True
    assert alpha.same_rank is not None and alpha.same_rank > 0.95
    assert alpha.variance > 0.8  # the second evaluator sees it too
    agreement = importance.agreement
    assert agreement is not None and agreement.agree and agreement.tops == ("kd.alpha", "kd.alpha")
    assert "agree: both rank `kd.alpha` first" in agreement.sentence
    assert importance.resamples == 100 and importance.random_state == 0
    assert importance.target_quantile == pytest.approx(5 / 40)
    assert "no bootstrap" not in (importance.note or "")  # the resampling view scores like a real study


def test_pure_noise_is_reported_as_an_untrustworthy_ranking() -> None:
    importance = param_importance(_memory_study("smoke", 30, _noise, seed=5))
    agreement = importance.agreement
    assert agreement is not None and not agreement.agree
    assert agreement.tops == ("kd.temperature", "kd.alpha")
    assert agreement.sentence == (
        "The evaluators disagree: PED-ANOVA ranks `kd.temperature` first, variance explained ranks `kd.alpha` "
        f"first (Spearman ρ = {agreement.spearman:.2f} over 3 knobs); do not trust this ranking at 30 COMPLETE "
        "trials.")
    assert importance.separated is False  # and the top two intervals overlap
    for seed in range(3):  # whatever the noise, the bootstrap never separates the top two knobs
        assert param_importance(_memory_study("smoke", 30, _noise, seed=seed)).separated is False


def _anneal_matters(params: dict[str, Any], rng: np.random.Generator) -> float:
    value = 0.8 + 0.05 * (params["kd.method"] == "annealing") + rng.normal(0.0, 0.005)
    return value + 0.004 * params.get("kd.tau_max", 0)


def test_conditional_knobs_are_listed_under_their_parent() -> None:
    study = _memory_study("default", 60, _anneal_matters)
    importance = param_importance(study, n_bootstrap=20)
    assert importance.values is not None
    order = list(importance.values)
    assert order == [k.path for k in importance.knobs]
    knobs = {k.path: k for k in study.space.knobs}
    rows = {k.path: k for k in importance.knobs}
    for path, row in rows.items():
        knob = knobs[path]
        if not knob.when:
            assert row.parent is None and row.depth == 0 and row.label() == path
            assert row.n_active == 60
            continue
        parent = knob.when[0].path
        assert row.parent == parent and row.depth == rows[parent].depth + 1
        # after its parent, with only its parent's other descendants in between
        between = order[order.index(parent) + 1:order.index(path)]
        assert all(rows[p].depth > rows[parent].depth for p in between), (path, between)
        active = study.trials[param_column(path)].notna().sum()
        assert row.n_active == active < 60
    roots = [rows[p].importance for p in order if rows[p].depth == 0]
    assert roots == sorted(roots, reverse=True)
    assert rows["kd.tau_max"].label() == "└ kd.tau_max (kd.method=annealing)"
    assert rows["student.max_lr"].condition == "student.schedule=cyclic|onecycle"


def test_the_bootstrap_is_reproducible_for_a_fixed_seed() -> None:
    study = _memory_study("smoke", 25, _alpha_drives)
    first = param_importance(study, n_bootstrap=40, random_state=7)
    again = param_importance(study, n_bootstrap=40, random_state=7)
    other = param_importance(study, n_bootstrap=40, random_state=8)
    assert first == again
    assert first.to_dict() == again.to_dict()
    assert [k.importance for k in first.knobs] == [k.importance for k in other.knobs]  # the point estimate
    assert [k.low for k in first.knobs] != [k.low for k in other.knobs]
    generator = param_importance(study, n_bootstrap=40, random_state=np.random.default_rng(7))
    assert generator.random_state is None and [k.low for k in generator.knobs] == [k.low for k in first.knobs]
    none = param_importance(study, n_bootstrap=0)
    assert none.resamples == 0 and all(k.low is None and k.same_rank is None for k in none.knobs)
    for bad in ({"n_bootstrap": -1}, {"random_state": True}, {"random_state": -3}, {"min_trials": 1}):
        with pytest.raises(ValueError, match="must"):
            param_importance(study, **bad)


def test_importance_summary_is_rounded_json() -> None:
    importance = param_importance(_memory_study("smoke", 25, _alpha_drives), n_bootstrap=20)
    d = json.loads(json.dumps(importance.to_dict(), allow_nan=False))
    assert set(d) == {"values", "method", "knobs"}
    assert list(d["values"]) == [k["knob"] for k in d["knobs"]]
    assert d["method"]["bootstrap"] == {"resamples": 20, "random_state": 0, "interval": [0.05, 0.95]}
    assert d["method"]["agreement"]["evaluators"] == ["PED-ANOVA", "variance explained"]
    assert set(d["method"]["second_values"]) == set(d["values"])
    floats = [v for k in d["knobs"] for v in k.values() if isinstance(v, float)]
    assert floats and all(round(v, 6) == v for v in floats)


def test_variance_explained_and_spearman_by_hand() -> None:
    # two groups of two: means 1 and 3 around 2, SS_between = 4, SS_within = 1 (SS_total = 5), k = 2,
    # n = 4: MS_within = 1 / 2, epsilon^2 = (4 - 0.5) / 5
    y = [0.5, 1.5, 2.5, 3.5]
    assert variance_explained(["a", "a", "b", "b"], y, numeric=False) == pytest.approx(0.7)
    assert variance_explained(["a", "b", "a", "b"], y, numeric=False) == 0.0  # below chance: clipped
    assert variance_explained(["a"] * 4, y, numeric=False) == 0.0
    assert variance_explained([True, True, False, False], [1.0] * 4, numeric=False) == 0.0
    x = np.linspace(0, 1, 40)
    assert variance_explained(x, 3 * x, numeric=True) > 0.95  # five quantile bins of a straight line
    assert variance_explained(x[:7], x[:7], numeric=True) == 0.0  # too few trials for two bins of 4
    with pytest.raises(ValueError, match="one length"):
        variance_explained([1.0, 2.0], [1.0], numeric=True)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    same = compare_rankings({"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 0.5, "b": 0.3, "c": 0.2},
                            names=("X", "Y"), n_trials=30)
    assert same.agree and same.tops == ("a", "a")
    flipped = compare_rankings({"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 0.1, "b": 0.3, "c": 0.6},
                               names=("X", "Y"), n_trials=30)
    assert not flipped.agree and "X ranks `a` first, Y ranks `c` first" in flipped.sentence


def test_report_lists_children_under_their_parent_and_flags_disagreement(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "conditional", space="default")
    study.reference()
    rng = np.random.default_rng(3)
    for number in range(MIN_IMPORTANCE_TRIALS + 4):
        params = _sample(study.space, rng)
        study.trial(number, "COMPLETE", params, _shifted([0.0] * 5), inner=_noise(params, rng), iterations=2)
    result = analyse(study.root, top_k=2)
    method = result["importance_method"]
    assert method["n_trials"] == 24 and method["bootstrap"]["resamples"] == 100
    assert list(result["importance"]) == [k["knob"] for k in result["importance_knobs"]]
    text = Path(result["report"]).read_text()
    section = text[text.index("## Parameter importance"):text.index("## Plots")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(result["importance"])
    for knob in result["importance_knobs"]:
        if knob["parent"] is None:
            continue
        at = next(i for i, r in enumerate(rows) if f"`{knob['knob']}`" in r)
        parent_at = next(i for i, r in enumerate(rows) if f"`{knob['parent']}` |" in r)
        condition = knob["condition"].replace("|", "\\|")  # escaped in a Markdown table
        assert parent_at < at and "└ " in rows[at] and f"({condition})" in rows[at]
        assert f"| {knob['n_active']} of 24 |" in rows[at]
    agreement = method["agreement"]
    assert agreement["sentence"] in section
    if not agreement["agree"]:
        assert f"parameter importance: {agreement['sentence']}" in result["notes"]
    assert not (agreement["agree"] and method["separated"])  # noise: either they disagree or nothing separates
    assert (study.root / "analysis" / "importance.png").read_bytes()[:8] == PNG_MAGIC
    json.dumps(result, allow_nan=False)


# ----------------------------------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_analyse_a_real_smoke_study(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    args = ["search", "--space", "smoke", "--name", "real", "--storage", str(tmp_path), "--num-samples", "8",
            "--grace-period", "2", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "tune.cli", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = analyse(tmp_path / "real")
    assert result["trials"]["total"] == 8
    assert result["baseline"] is not None and result["baseline"]["n_seeds"] == 2
    if result["trials"]["COMPLETE"]:
        best = result["best"]
        assert set(best["params"]) == {"kd.alpha", "kd.temperature", "student.optimizer"}
        assert best["vs_baseline"]["n_seeds"] == 2
    for path in result["plots"]:
        assert Path(path).read_bytes()[:8] == PNG_MAGIC
    assert Path(result["report"]).is_file()
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_report_and_plots_respect_the_umask_like_every_other_file(tmp_path: Path, umask: int) -> None:
    study = _rich_study(tmp_path / "modes")
    old = os.umask(umask)
    try:
        summary = analyse(study.root, top_k=3)
    finally:
        os.umask(old)
    written = [Path(summary["report"]), *(Path(p) for p in summary["plots"])]
    assert len(written) > 2  # the report and some plots
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


# ---------------------------------------------------------------------------------- tasks, classes, sizes

def _task(space: str, n_classes: int, n_groups: int) -> dict[str, Any]:
    from kdcore import resolve_task

    base = parse_space(_space_text(space)).base
    return resolve_task(base.task, base.teacher, n_classes, n_groups).describe()


OVERLAP_PARAMS: dict[str, Any] = {"baseline": 5178, "teacher": [19237, 19172, 19172], "student": 5178}


def _per_class(c: int, i: int) -> float:
    """Seed i's holdout accuracy on class c in the synthetic overlap study (seed mean: 0.902 + 0.01 c)."""
    return 0.9 + 0.01 * c + 0.001 * i


def _overlap_study(root: Path) -> FakeStudy:
    """digits-overlap (teachers of 0-4, 4-7 and 7,8,9,0: classes 0, 4 and 7 shared), two COMPLETE trials of
    known size and per-class accuracy, one PRUNED, the baseline, the teachers and the best trial's ablation."""
    task = _task("digits-overlap", 10, 1)
    models = {name: {"name": "cnn", "channels": [16, 32], "params": n} for name, n in OVERLAP_PARAMS.items()}
    study = FakeStudy(root, space="digits-overlap", extra_metadata={"task": task, "models": models})
    rows = []
    for i, s in enumerate(SEEDS):
        rows.append({"study": study.name, "method": "baseline", "seed": s, "inner_acc": 0.91, "holdout_acc": 0.9,
                     "params": 5178, "classes": list(range(10)),
                     "holdout_class_acc": [0.8 if c == 3 else 0.9 for c in range(10)]})
        for k, teacher in enumerate(task["teachers"]):
            rows.append({"study": study.name, "method": f"teacher_{k}", "seed": s, "inner_acc": 0.99 - 0.01 * k,
                         "holdout_acc": 0.96 + 0.005 * i, "params": OVERLAP_PARAMS["teacher"][k],
                         "classes": teacher["classes"], "holdout_class_acc": [0.95] * len(teacher["classes"])})
        rows.append({"study": study.name, "method": "ablation", "seed": s, "trial_number": 0, "inner_acc": 0.9,
                     "holdout_acc": 0.89, "params": 10344, "classes": list(range(10)),
                     "holdout_class_acc": [0.85] * 10})
    study.tables.append("reference", rows)
    student = {s: [None if (c == 9 and i == 0) else _per_class(c, i) for c in range(10)]
               for i, s in enumerate(SEEDS)}  # seed 0's holdout has no sample of class 9
    params = {"kd.alpha": 0.5, "kd.temperature": 2.0, "student.width": 2, "student.optimizer": "adam",
              "student.schedule": "constant", "student.lr": 0.01, "student.batch_size": 64}
    study.trial(0, "COMPLETE", params, _shifted([0.02] * 5), inner=0.95, class_acc=student, student_params=10344)
    study.trial(1, "COMPLETE", {**params, "student.width": 1}, _shifted([0.01] * 5), inner=0.93,
                class_acc=student, student_params=5178)
    study.trial(2, "PRUNED", params, _shifted([-0.1] * 5), iterations=2)
    return study


def test_teachers_are_reported_on_their_own_classes_with_what_they_know(tmp_path: Path) -> None:
    result = analyse(_overlap_study(tmp_path / "overlap").root)
    teachers = result["teachers"]
    assert [t["method"] for t in teachers] == ["teacher_0", "teacher_1", "teacher_2"]
    assert [t["classes"] for t in teachers] == [[0, 1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 0]]
    assert [t["knows"] for t in teachers] == ["classes 0,1,2,3,4", "classes 4,5,6,7", "classes 7,8,9,0"]
    assert [t["params"] for t in teachers] == OVERLAP_PARAMS["teacher"]
    holdout = [0.96 + 0.005 * i for i in range(5)]
    for k, t in enumerate(teachers):
        assert t["group"] is None and t["n_seeds"] == 5
        assert t["inner_acc_mean"] == pytest.approx(0.99 - 0.01 * k) and t["inner_acc_std"] == pytest.approx(0)
        assert t["holdout_acc_mean"] == pytest.approx(0.97)
        assert t["holdout_acc_std"] == pytest.approx(float(np.std(holdout, ddof=1)))
        assert t["holdout_class_acc_mean"] == pytest.approx([0.95] * len(t["classes"]))
    assert result["task"]["shared_classes"] == [0, 4, 7]
    text = Path(result["report"]).read_text()
    section = text[text.index("## Teachers on their own classes"):text.index("## Holdout accuracy per class")]
    assert "Task: 10 classes, 1 group(s), routing `label`" in section
    assert "| teacher_1 | classes 4,5,6,7 | 19,172 | 5 | 98.00 ± 0.00 % | 97.00 ± 0.79 % |" in section
    json.dumps(result, allow_nan=False)


def test_the_best_students_accuracy_per_class_is_beside_the_baseline_and_ablation(tmp_path: Path) -> None:
    result = analyse(_overlap_study(tmp_path / "overlap").root)
    per_class = result["class_accuracy"]
    assert per_class["trial_number"] == 0 and per_class["classes"] == list(range(10))
    assert per_class["shared_classes"] == [0, 4, 7]
    assert set(per_class["accuracy"]) == {"student", "baseline", "ablation"}  # no tuned baseline recorded
    student = per_class["accuracy"]["student"]
    assert student[:9] == pytest.approx([0.902 + 0.01 * c for c in range(9)])
    assert student[9] == pytest.approx(0.9 + 0.09 + 0.0025)  # the four seeds that have a class-9 sample
    assert per_class["accuracy"]["baseline"][3] == pytest.approx(0.8)
    assert per_class["accuracy"]["ablation"] == pytest.approx([0.85] * 10)
    counts = result["parameter_counts"]
    assert (counts["student"], counts["baseline"], counts["fixed_student"]) == (10344, 5178, 5178)
    assert counts["teachers"] == {f"teacher_{k}": n for k, n in enumerate(OVERLAP_PARAMS["teacher"])}
    assert result["best"]["student_params"] == 10344 and result["top"][1]["student_params"] == 5178
    text = Path(result["report"]).read_text()
    section = text[text.index("## Holdout accuracy per class"):text.index("## Parameter importance")]
    assert "| class | student (trial #0) | mixed baseline | ablation (no KD) |" in section
    assert "| 4* | 94.20 % | 90.00 % | 85.00 % |" in section and "| 3 | 93.20 % | 80.00 % | 85.00 % |" in section
    assert [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ") and "%" in line] == [
        "| 0*", "| 1", "| 2", "| 3", "| 4*", "| 5", "| 6", "| 7*", "| 8", "| 9"]
    assert "`*` a shared class: more than one teacher knows it (0,4,7)." in section
    assert "Parameters of one network: student 10,344, mixed baseline 5,178." in section
    assert "- trainable parameters (one network): student 10,344, mixed baseline 5,178" in text  # the headline
    assert "| parameters |" in text[text.index("## Top configurations"):]  # the student's size per trial
    json.dumps(result, allow_nan=False)


def test_a_multi_domain_teacher_is_listed_with_its_domain_and_classes(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "domains", extra_metadata={"task": _task("smoke", 2, 3)})
    study.reference()  # teacher_0 only has rows: teachers 1 and 2 are listed from the metadata
    result = analyse(study.root)
    assert [t["knows"] for t in result["teachers"]] == [
        "domain 0, classes 0,1", "domain 1, classes 0,1", "domain 2, classes 0,1"]
    assert [t["n_seeds"] for t in result["teachers"]] == [5, 0, 0]
    text = Path(result["report"]).read_text()
    assert "| teacher_2 | domain 2, classes 0,1 | not recorded | 0 | – | – |" in text


def test_a_study_of_the_kdtune_before_the_task_columns_still_analyses(tmp_path: Path) -> None:
    study = FakeStudy(tmp_path / "older")  # metadata without task or models
    for table in ("trials", "seeds", "reference"):  # tables without the new columns, as it wrote them
        study.tables.schemas[table] = pa.schema(
            [f for f in study.tables.schemas[table]
             if f.name not in ("student_params", "projector_params", "head", "holdout_class_acc", "params",
                               "classes")])
    study.reference()
    for n in range(2):
        study.trial(n, "COMPLETE", {"kd.alpha": 0.5, "kd.temperature": 2.0, "student.optimizer": "adam"},
                    _shifted([0.01 * n] * 5))
    assert "holdout_class_acc" not in pd.read_parquet(study.root / "results" / "seeds.parquet").columns
    result = analyse(study.root)
    assert result["best"]["number"] == 1 and result["comparison"] == "baseline"  # the comparison stays
    assert result["task"] is None and result["models"] is None and result["class_accuracy"] is None
    assert result["teachers"] == [{
        "method": "teacher_0", "index": 0, "classes": None, "group": None, "checkpoint": None,
        "knows": "classes not recorded", "params": None, "n_seeds": 5, "inner_acc_mean": pytest.approx(1.0),
        "inner_acc_std": pytest.approx(0.0), "holdout_acc_mean": pytest.approx(0.99),
        "holdout_acc_std": pytest.approx(0.0), "holdout_class_acc_mean": None}]
    assert result["parameter_counts"] == {"student": None, "projector": None, "head": None, "baseline": None,
                                          "fixed_student": None, "teachers": {"teacher_0": None}}
    text = Path(result["report"]).read_text()
    assert "The task is not recorded (a study of an older kdtune)" in text
    assert "| teacher_0 | classes not recorded | not recorded | 5 |" in text
    assert "Not shown: not recorded for the best trial" in text
    assert "- trainable parameters (one network)" not in text and "| parameters |" not in text.split("## Reference")[0]
    json.dumps(result, allow_nan=False)


# ------------------------------------------------------------------------------ kd.method and model size

NONE_ACC = dict(BASELINE)  # the best `none` trial's holdout accuracy per seed
SIMKD_DIFFS = [0.02, 0.01, 0.03, 0.02, 0.04]  # per seed, in SEEDS order (0, 10, 1234, 99, 2021)
HINTON_DIFFS = [0.01, -0.01, 0.0, 0.02, -0.02]
REUSED = "teacher classifier (reused, frozen)"
RECIPE = {"student.optimizer": "sgd", "student.weight_decay": 1e-4, "student.schedule": "multistep",
          "student.lr": 0.05}
SIMKD = {"kd.method": "simkd", "kd.factor": 2, "kd.placement": "last", "kd.feature_loss": "mse",
         "kd.use_labels": False, "kd.ce_weight": 0.0, **RECIPE}
HINTON = {"kd.method": "hinton", "kd.alpha": 0.5, "kd.temperature": 4.0, **RECIPE}
NONE = {"kd.method": "none", **RECIPE}


def _methods_study(root: Path, *, searched: tuple[str, ...] = ("simkd", "hinton", "none"),
                   none_complete: bool = True) -> FakeStudy:
    """digits-simkd with kd.method among ``searched``: two SimKD trials of different size (the better by the
    objective has the lower holdout accuracy), one Hinton, two `none` (the same), one PRUNED, one ERROR; the
    references (baseline, the teacher, which knows every class, the ablation of the best trial #0)."""
    text = _space_text("digits-simkd")
    text = text.replace("choices: [simkd, hinton, none]", f"choices: [{', '.join(searched)}]")
    models = {"baseline": {"name": "resnet", "params": 2000}, "student": {"name": "resnet", "params": 2000},
              "teacher": {"name": "resnet", "params": [20000]}}
    study = FakeStudy(root, space_text=text, extra_metadata={"task": _task("digits-simkd", 10, 1),
                                                             "models": models})
    rows = [{"study": study.name, "method": method, "seed": s, "trial_number": number, "inner_acc": acc + 0.01,
             "holdout_acc": acc, "params": params, "classes": list(range(10))}
            for method, number, params, shift in (("baseline", None, 2000, -0.01), ("teacher_0", None, 20000, 0.05),
                                                  ("ablation", 0, 2000, 0.005))
            for s, acc in _shifted([shift] * 5, NONE_ACC).items()]
    study.tables.append("reference", rows)
    study.trial(0, "COMPLETE", SIMKD, _shifted(SIMKD_DIFFS, NONE_ACC), inner=0.97, student_params=4000,
                projector_params=1000, head=REUSED)
    study.trial(1, "COMPLETE", {**SIMKD, "kd.factor": 4}, _shifted([0.05] * 5, NONE_ACC), inner=0.95,
                student_params=3000, projector_params=500, head=REUSED)
    study.trial(5, "PRUNED", HINTON, _shifted([-0.2] * 5, NONE_ACC), iterations=2)
    study.trial(6, "ERROR", SIMKD, _shifted([-0.3] * 5, NONE_ACC), iterations=1)
    if "hinton" in searched:
        study.trial(2, "COMPLETE", HINTON, _shifted(HINTON_DIFFS, NONE_ACC), inner=0.96, student_params=2000,
                    head="student")
    if "none" in searched:
        status = "COMPLETE" if none_complete else "PRUNED"
        study.trial(3, status, NONE, NONE_ACC, inner=0.94, student_params=2000, head="student")
        study.trial(4, status, NONE, _shifted([0.06] * 5, NONE_ACC), inner=0.92, student_params=2000,
                    head="student")
    return study


def _ci(diffs: list[float]) -> tuple[float, float]:
    d = np.array(diffs)
    assert d.size == 5  # Student t's 0.975 quantile at df 4
    half = 2.776445105 * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean() - half, d.mean() + half


def test_each_method_is_compared_by_its_best_trial_with_the_same_recipe_without_kd_seed_by_seed(
        tmp_path: Path) -> None:
    result = analyse(_methods_study(tmp_path / "methods").root)
    methods = result["methods"]
    assert methods["knob"] == "kd.method" and [m["method"] for m in methods["methods"]] == ["simkd", "hinton", "none"]
    by = {m["method"]: m for m in methods["methods"]}
    # chosen by the objective (inner accuracy), never by holdout: #1 and #4 have the higher holdout accuracy
    assert [by[m]["best"]["number"] for m in ("simkd", "hinton", "none")] == [0, 2, 3]
    assert (by["simkd"]["trials"]["COMPLETE"], by["simkd"]["trials"]["ERROR"], by["hinton"]["trials"]["PRUNED"]) == (2, 1, 1)
    assert by["simkd"]["best"]["trainable"] == {"student": 3000, "projector": 1000, "total": 4000}
    assert by["hinton"]["best"]["trainable"] == {"student": 2000, "projector": None, "total": 2000}
    assert (by["simkd"]["best"]["head"], by["none"]["best"]["head"]) == (REUSED, "student")
    simkd = by["simkd"]["best"]
    assert simkd["holdout_acc_mean"] == pytest.approx(np.mean(list(NONE_ACC.values())) + np.mean(SIMKD_DIFFS))
    assert simkd["holdout_acc_std"] == pytest.approx(np.std(list(_shifted(SIMKD_DIFFS, NONE_ACC).values()), ddof=1))
    assert simkd["inner_acc_mean"] == pytest.approx(0.97) and simkd["n_seeds"] == 5
    assert methods["against"]["kind"] == "none" and methods["against"]["trial_number"] == 3
    assert by["none"]["vs"] is None  # the comparator itself
    # SimKD's best (#0) has its own ablation: that is its same-recipe comparison, not the `none` trial
    assert (by["simkd"]["compared_with"], by["simkd"]["compared_trial"]) == ("ablation", 0)
    assert by["simkd"]["differs"] == "KD term, network size: student 4,000 vs ablation 2,000 parameters"
    vs = by["simkd"]["vs"]
    # paired by seed: seed 1234 is +0.03 and seed 99 +0.02 (less the ablation's 0.005), whatever the row order
    assert [(d["seed"], d["diff"]) for d in vs["seed_diffs"]] == [
        (0, pytest.approx(0.015)), (10, pytest.approx(0.005)), (99, pytest.approx(0.015)),
        (1234, pytest.approx(0.025)), (2021, pytest.approx(0.035))]
    assert vs["diff_mean"] == pytest.approx(0.019) and vs["ci95"] == pytest.approx(list(np.array(_ci(SIMKD_DIFFS)) - 0.005))
    assert vs["p_value"] == pytest.approx(2 / 2**5) and vs["n_seeds"] == 5  # all five of one sign
    # Hinton's best (#2) has no ablation, and the best `none` trial (#3) has its recipe: compared with it
    assert (by["hinton"]["compared_with"], by["hinton"]["compared_trial"]) == ("none", 3)
    assert by["hinton"]["differs"] == "KD term only (same recipe, seeds, folds)"
    hinton = by["hinton"]["vs"]
    assert hinton["diff_mean"] == pytest.approx(0.0, abs=1e-12)
    assert hinton["p_value"] == pytest.approx(1.0)  # a mean of 0: every sign assignment is as extreme
    assert methods["shared_seeds"] and methods["seeds"] == sorted(SEEDS)
    assert "share the study's seeds (0, 10, 99, 1234, 2021)" in methods["note"]

    text = Path(result["report"]).read_text()
    section = text[text.index("## Distillation methods compared"):text.index("## Holdout accuracy against")]
    assert methods["note"] in section
    lo, hi = np.array(_ci(SIMKD_DIFFS)) - 0.005
    assert ("| `simkd` | 2 / 0 / 1 | #0 `t0000` | 97.00 ± 1.00 % | 94.40 ± 2.51 % | 3,000 + 1,000 = 4,000 | "
            f"{REUSED} | ablation of #0 | +1.90 pp [{100 * lo:+.2f}, {100 * hi:+.2f}] | 0.0625 | 5 | KD term, network "
            "size: student 4,000 vs ablation 2,000 parameters |") in section
    assert "| `none` #3 | +0.00 pp" in section and "| KD term only (same recipe, seeds, folds) |" in section
    assert "| `none` | 2 / 0 / 0 | #3 `t0003` |" in section and "(the comparator)" in section
    assert "the same recipe without KD" in section and "reused and frozen" in section
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("case", ["not searched", "without a COMPLETE trial"])
def test_without_a_complete_none_trial_the_methods_are_compared_with_the_ablation(tmp_path: Path, case: str) -> None:
    study = _methods_study(tmp_path / "m", searched=("simkd", "hinton") if case == "not searched" else
                           ("simkd", "hinton", "none"), none_complete=False)
    result = analyse(study.root)
    methods = result["methods"]
    assert methods["against"]["kind"] == "ablation" and methods["against"]["trial_number"] == 0
    assert f"`none` {case}" in methods["against"]["meaning"]
    by = {m["method"]: m for m in methods["methods"]}
    assert by["simkd"]["vs"]["diff_mean"] == pytest.approx(0.024 - 0.005)
    # the ablation is of #0, not of Hinton's #2: another recipe, so Hinton has no same-recipe comparison
    assert by["hinton"]["vs"] is None and by["hinton"]["compared_with"] is None
    assert by["hinton"]["differs"].startswith("no same-recipe comparison: no ablation of #2 recorded")
    if case == "not searched":
        assert list(by) == ["simkd", "hinton"]
    else:
        assert by["none"]["best"] is None and by["none"]["vs"] is None and by["none"]["trials"]["PRUNED"] == 2
        assert "| `none` | 0 / 2 / 0 | no COMPLETE trial |" in Path(result["report"]).read_text()


def test_a_method_is_compared_with_its_own_ablation_never_with_a_none_trial_of_another_recipe(
        tmp_path: Path) -> None:
    """The bug of the demo: the best Hinton trial (Adam) was set against a `none` trial of another recipe."""
    study = _methods_study(tmp_path / "m")
    study.trial(7, "COMPLETE", {**HINTON, "student.optimizer": "adam"}, _shifted([0.03] * 5, NONE_ACC),
                inner=0.965, student_params=2000, head="student")  # Hinton's best now, with another optimizer
    result = analyse(study.root)
    hinton = next(m for m in result["methods"]["methods"] if m["method"] == "hinton")
    assert hinton["best"]["number"] == 7 and hinton["vs"] is None and hinton["compared_with"] is None
    assert hinton["differs"] == ("no same-recipe comparison: no ablation of #7 recorded, and the best `none` "
                                 "trial (#3) has another recipe (optimizer adam→sgd)")
    row = next(line for line in Path(result["report"]).read_text().splitlines() if line.startswith("| `hinton`"))
    assert row.startswith("| `hinton` | 2 / 1 / 0 | #7 `t0007` |")
    assert row.endswith("| – | – | – | 5 | no same-recipe comparison: no ablation of #7 recorded, and the best "
                        "`none` trial (#3) has another recipe (optimizer adam→sgd) |")

    # an ablation of #7 (of any trial number, not only the study's best) is its same-recipe comparison
    study.tables.append("reference", [{"study": study.name, "method": "ablation", "seed": s, "trial_number": 7,
                                       "inner_acc": a, "holdout_acc": a, "params": 2000, "classes": list(range(10))}
                                      for s, a in _shifted([0.01] * 5, NONE_ACC).items()])
    hinton = next(m for m in analyse(study.root)["methods"]["methods"] if m["method"] == "hinton")
    assert (hinton["compared_with"], hinton["compared_trial"]) == ("ablation", 7)
    assert hinton["vs"]["diff_mean"] == pytest.approx(0.02)
    assert hinton["differs"] == "KD term only (same recipe, seeds, folds)"
    assert hinton["sides"]["same_recipe"] and hinton["sides"]["same_size"]


def test_accuracy_against_trainable_parameters_lists_every_complete_trial_and_the_references(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = analyse(_methods_study(tmp_path / "sizes").root)
    sizes = result["accuracy_vs_params"]
    # smallest first; among equal sizes, by the objective
    assert [(p["number"], p["method"], p["trainable"]["total"]) for p in sizes["trials"]] == [
        (2, "hinton", 2000), (3, "none", 2000), (4, "none", 2000), (1, "simkd", 3000), (0, "simkd", 4000)]
    assert sizes["trials"][3]["trainable"] == {"student": 2500, "projector": 500, "total": 3000}
    assert sizes["unsized"] == 0
    refs = {r["method"]: r for r in sizes["references"]}
    assert list(refs) == ["baseline", "ablation", "teacher_0"]
    assert (refs["teacher_0"]["params"], refs["teacher_0"]["own_classes"]) == (20000, False)  # knows every class
    assert refs["baseline"]["holdout_acc_mean"] == pytest.approx(np.mean(list(NONE_ACC.values())) - 0.01)
    plot = Path(result["report"]).parent / PLOT_FILES["params"]
    assert str(plot) in result["plots"] and plot.read_bytes()[:8] == PNG_MAGIC
    text = Path(result["report"]).read_text()
    section = text[text.index("## Holdout accuracy against trainable parameters"):text.index("## Reference:")]
    rows = [line for line in section.splitlines() if line.startswith("| #")]
    assert [r.split(" | ")[0] for r in rows] == ["| #2 `t0002`", "| #3 `t0003`", "| #4 `t0004`", "| #1 `t0001`",
                                                 "| #0 `t0000`"]
    assert f"| #0 `t0000` | `simkd` | 3,000 | 1,000 | 4,000 | {REUSED} | 94.40 ± 2.51 % | 97.00 % |" in section
    assert "| #2 `t0002` | `hinton` | 2,000 | – | 2,000 | student |" in section
    assert "| teacher_0 | 20,000 | 5 | 97.00 ± 1.58 % |" in section
    assert f"![Holdout accuracy against trainable parameters]({PLOT_FILES['params']})" in text

    from results import markdown_methods as markdown

    monkeypatch.setattr(markdown, "MAX_SIZE_ROWS", 2)  # a large study: one row per method and size
    text = Path(analyse(tmp_path / "sizes")["report"]).read_text()
    section = text[text.index("## Holdout accuracy against trainable parameters"):text.index("## Reference:")]
    assert "5 COMPLETE trials, grouped by method and size" in section
    assert "| `none` | 2,000 | 2 | #3 | 92.00 ± 1.58 % | 92.00 % to 98.00 % |" in section
    assert "| `simkd` | 4,000 | 1 | #0 |" in section and "| #4 `t0004`" not in section


def test_a_study_without_methods_or_sizes_has_neither_section(tmp_path: Path) -> None:
    study = _rich_study(tmp_path / "plain")  # the smoke space: no kd.method knob, sizes not recorded
    result = analyse(study.root)
    assert result["methods"] is None and result["accuracy_vs_params"]["trials"] == []
    text = Path(result["report"]).read_text()
    assert "## Distillation methods compared" not in text and "## Holdout accuracy against" not in text
    assert not (study.root / "analysis" / PLOT_FILES["params"]).exists()
    # a searched architecture alone (no kd.method knob) still gets the accuracy-against-size table
    result = analyse(_overlap_study(tmp_path / "widths").root)
    assert result["methods"] is None
    assert [p["trainable"]["total"] for p in result["accuracy_vs_params"]["trials"]] == [5178, 10344]
    assert "## Holdout accuracy against trainable parameters" in Path(result["report"]).read_text()


def test_kdtune_analyse_prints_teachers_classes_sizes_and_methods(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tune.cli import main

    overlap = _overlap_study(tmp_path / "overlap")
    assert main(["analyse", str(overlap.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "teacher_1: classes 4,5,6,7; holdout on its own classes 97.00 ± 0.79 % (5 seeds)" in out
    per_class = next(line for line in out if line.startswith("best per class"))
    assert per_class.startswith("best per class (holdout %, * shared): 0* 90.2 1 91.2 2 92.2 3 93.2 4* 94.2 ")
    assert "trainable parameters: student 10,344, baseline 5,178, teacher_0 19,237, teacher_1 19,172, " \
           "teacher_2 19,172" in out
    assert not any(line.startswith("kd.method") for line in out)

    methods = _methods_study(tmp_path / "methods")
    assert main(["analyse", str(methods.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "trainable parameters: student 4,000 (projector 1,000), baseline 2,000, teacher_0 20,000" in out
    # SimKD's Δ is against its own ablation now; the CLI (tune/cli.py) still labels every Δ with the study's
    # comparator (`against`), so only Hinton's line, whose comparator is that `none` trial, is checked whole
    assert any(line.startswith(f"kd.method simkd: best trial 0, holdout 94.40 ± 2.51 %, 4,000 params, head {REUSED}")
               for line in out)
    lo, hi = _ci(HINTON_DIFFS)
    hinton = [line for line in out if line.startswith("kd.method hinton: best trial 2, holdout 92.00 ± 1.87 %, "
                                                        "2,000 params, head student; vs none")]
    assert len(hinton) == 1 and f"+0.00 points [{100 * lo:+.2f}, {100 * hi:+.2f}], p = 1" in hinton[0], out
    assert any(line.startswith("kd.method none: best trial 3, holdout 92.00 ± 1.58 %, 2,000 params, head student")
               for line in out), out
    assert out[-1].startswith("report: ")
    assert main(["analyse", str(methods.root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["methods"]["against"]["method"] == "none" and summary["best"]["projector_params"] == 1000
    assert summary["parameter_counts"]["head"] == REUSED
