"""The ``kdtune`` commands (``train``, ``search``, ``resume``, ``analyse``, ``spaces``), one function each
taking the parsed arguments and returning the exit code; ``tune.cli`` parses and calls them.

The heavy libraries are imported by the command that needs them, when it runs, so that ``kdtune train``
never pays for importing Ray and a bad argument to ``search`` is refused before Ray (or torch) is imported.
``search`` and ``resume`` end with the study's tuned baseline (``tune.baseline``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import kdcore
from kdcore import one_line, safe_load
from search_spaces import builtin_spaces, load_space
from tune import signals
from tune.arguments import parse_seeds
from tune.cluster import ClusterSpec
from tune.errors import KDTuneError
from tune.plan import SELF_DISTILLATION, RunOptions, SearchSettings, check_task, plan_study, self_distillation
from tune.progress import ProgressLine
from tune.render import (
    describe_origin,
    format_method_table,
    loaded_teacher_lines,
    print_analysis,
    print_outcome,
)
from tune.rerun import check_data, study_trial_config
from tune.study import StudyMeta, StudyPaths

if TYPE_CHECKING:
    from tune.outcome import SearchOutcome

DEFAULT_DATA = "builtin:d0.5"


def _read_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise KDTuneError(f"config file not found: {p}")
    try:
        data = safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise KDTuneError(f"{p}: cannot be read as a text file ({exc})") from None
    except yaml.YAMLError as exc:
        raise KDTuneError(f"{p}: not valid YAML ({one_line(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KDTuneError(f"{p}: expected a mapping of settings, but got {type(data).__name__}")
    return data


def config_from_yaml(path: str) -> Any:
    """The experiment of a ``--config`` file: nested sections (``student: {lr: 0.01}``) and, at the top level,
    dotted keys (``student.lr: 0.01``, applied on top as ``--set`` would); a setting given both ways is
    refused with one line saying to give it once."""
    data = _read_yaml(path)
    dotted = {str(k): v for k, v in data.items() if isinstance(k, str) and "." in k}
    nested = {k: v for k, v in data.items() if not (isinstance(k, str) and "." in k)}
    for key in dotted:
        section, _, rest = key.partition(".")
        inner = nested.get(section)
        if isinstance(inner, dict) and rest.split(".")[0] in inner:
            raise KDTuneError(f"{path}: {key} is given twice, as the dotted key {key!r} and nested under "
                              f"{section}:; give it once (either `{key}: ...` or `{section}: {{{rest}: ...}}`)")
    config = kdcore.ExperimentConfig.from_dict(nested)
    return config.with_overrides(dotted) if dotted else config


def _train_config(args: argparse.Namespace) -> Any:
    config = config_from_yaml(args.config) if args.config else kdcore.ExperimentConfig()
    overrides: dict[str, Any] = {}
    methods = ("baseline", "teacher", "student")
    for flag, key in (("epochs", "epochs"), ("lr", "lr"), ("optimizer", "optimizer"), ("patience", "patience")):
        value = getattr(args, flag)
        if value is not None:
            overrides.update({f"{m}.{key}": value for m in methods})
    if args.batch_size is not False:
        overrides.update({f"{m}.batch_size": args.batch_size for m in methods})
    for flag, key in (("alpha", "kd.alpha"), ("temperature", "kd.temperature"), ("protocol", "protocol"),
                      ("seeds", "seeds"), ("eval_every", "eval_every"), ("kd_method", "kd.method")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    overrides.update(dict(args.set or []))
    return config.with_overrides(overrides) if overrides else config


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from kdcore import EpochReport, run_experiment

    if args.threads < 1:
        raise KDTuneError(f"--threads must be >= 1, but got {args.threads}")
    origin: dict[str, Any] | None = None
    if args.seeds is not None:
        args.seeds = parse_seeds(args.seeds)
    if args.from_study is not None:
        _refuse_recipe_flags(args)
        config, data_spec, origin = study_trial_config(args.from_study, trial=args.trial, rank=args.rank,
                                                       seeds=args.seeds)
    else:
        if args.trial is not None or args.rank is not None:
            flag = "--trial" if args.trial is not None else "--rank"
            raise KDTuneError(f"{flag} chooses a trial of a study, so it needs --from DIR/NAME, "
                              "but got no --from")
        config, data_spec = _train_config(args), args.data or DEFAULT_DATA
    dataset = kdcore.load_data(data_spec)
    check_task(config, dataset, absolute=False)  # a bad layout or checkpoint: one line before any training
    device = _resolve_device(args.device)
    if origin is not None:
        check_data(origin, dataset.fingerprint(), dataset.source)
        if not args.json:
            print(describe_origin(origin), flush=True)
    note = SELF_DISTILLATION if self_distillation(config, dataset.n_domains) else None
    if note is not None and args.json:
        print(f"kdtune train: note: {note}", file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    progress = ProgressLine(enabled=not args.quiet)
    totals = {"baseline": config.baseline.epochs,
              "student": sum(kdcore.METHODS[config.kd.method].phase_epochs(config.kd, config.student.epochs))}

    def on_epoch(report: EpochReport) -> None:
        total = totals.get(report.method, config.teacher.epochs)
        progress.update(f"[{report.method}] epoch {report.epoch}/{total}  "
                        f"inner acc {100 * report.inner_acc_mean:.2f} %")

    result: dict[str, Any] = run_experiment(dataset, config, device=device, on_epoch=on_epoch).to_dict()
    progress.done()
    result["data"] = {**result["data"], "source": dataset.source}
    if origin is not None:
        result["from"] = {key: origin[key] for key in ("study", "trial", "params")}
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"data {dataset.source} (sha256 {result['data']['fingerprint'][:12]}), protocol {config.protocol}, "
              f"seeds {list(config.seeds)}")
        print(format_method_table(result))
        for line in loaded_teacher_lines(result):
            print(line)
        if note is not None:
            print(f"note: {note}")
        if config.protocol == "seed":
            print("protocol 'seed': checkpoints were selected on the same validation set that is reported "
                  "(as published); these figures are optimistic.")
    return 0


# Flags that change the recipe: `--from` trains the study's configuration exactly, so it takes none of them.
RECIPE_FLAGS = (("config", "--config"), ("set", "--set"), ("alpha", "--alpha"),
                ("temperature", "--temperature"), ("epochs", "--epochs"), ("lr", "--lr"),
                ("optimizer", "--optimizer"), ("batch_size", "--batch-size"), ("patience", "--patience"),
                ("eval_every", "--eval-every"), ("kd_method", "--kd-method"), ("protocol", "--protocol"),
                ("data", "--data"))


def _refuse_recipe_flags(args: argparse.Namespace) -> None:
    unset = {"batch_size": False}  # `--batch-size full` parses to None, so "not given" is False there
    given = [flag for dest, flag in RECIPE_FLAGS if getattr(args, dest) is not unset.get(dest)]
    if given:
        raise KDTuneError(f"--from re-trains the study's configuration exactly, so it takes only --trial, "
                          f"--rank, --seeds, --device, --threads, --json and --quiet, but got {', '.join(given)}")


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KDTuneError(f"--device {name}: no CUDA device is available on this machine; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise KDTuneError(f"--device must be cpu, cuda, cuda:N or auto, but got {name!r}")
    return name


def cmd_analyse(args: argparse.Namespace) -> int:
    from results.report import analyse

    summary = analyse(args.study, top_k=args.top_k, out_dir=args.out)
    if args.json:
        json.dump(summary, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print_analysis(summary)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    names = builtin_spaces()
    width = max(len(n) for n in names)
    for name in names:
        space = load_space(name)
        knobs = ", ".join(k.path for k in space.knobs)
        print(f"{name:<{width}} {space.description}\n{'':<{width}} knobs: {knobs}")
    return 0


def default_name(space: str, now: float | None = None) -> str:
    """A study name for ``search`` without ``--name``, as ``make demo`` makes one: ``<space>-YYYYMMDD-HHMMSS``
    (the space's file name without ``.yaml`` when it is a file; characters a name cannot hold become '-')."""
    import re
    import time

    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(space).name.removesuffix(".yaml").removesuffix(".yml"))
    stem = stem.lstrip("._-")[:40] or "study"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def cmd_search(args: argparse.Namespace) -> int:
    # Everything that can be checked without Ray is checked before Ray is imported (tune.plan is light).
    if "://" in args.storage:
        raise KDTuneError(
            f"--storage must be a folder every node mounts at the same path (NFS, Lustre, ...), but got the URI "
            f"{args.storage!r}: the Optuna journal and the teacher cache need POSIX file locks, which object "
            "stores lack; copy finished results there afterwards (see the README)")
    named = args.name is None
    if named:
        args.name = default_name(args.space)
    settings = SearchSettings(
        data=args.data, space=args.space, name=args.name, storage=Path(args.storage),
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, address=args.address, seed=args.seed,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, max_t=args.max_t,
        max_failures=args.max_failures, tune_baseline=args.tune_baseline, sampler=args.sampler,
        num_cpus=args.num_cpus, pruning=args.pruning,
    )
    paths, meta = plan_study(settings)
    args.study_dir = paths.root  # for the resume hint, however the run ends
    if named:  # said once the plan holds, so that bad input stays one line
        print(f"kdtune search: no --name given, so the study is named {args.name} ({paths.root})", file=sys.stderr,
              flush=True)
    if meta.self_distillation:
        print(f"kdtune search: note: {SELF_DISTILLATION}", file=sys.stderr, flush=True)
    from tune.baseline import with_tuned_baseline
    from tune.runner import run_study

    options = settings.run_options(quiet=args.quiet, verbose=args.verbose)
    outcome = run_study(paths, meta, budget=meta.num_samples, sampler_seed=meta.seed, options=options, new=True)
    return _finish(with_tuned_baseline(outcome, paths, meta, options), args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    options = RunOptions(ClusterSpec(args.address, args.num_cpus), args.max_failures, quiet=args.quiet,
                         verbose=args.verbose)
    args.study_dir = Path(args.study).expanduser().resolve()
    from tune.baseline import with_tuned_baseline
    from tune.resume import resume

    outcome = resume(args.study, more=args.more, options=options)
    paths = StudyPaths(Path(outcome.study_dir))  # resume wrote what it changed of the record (--more)
    return _finish(with_tuned_baseline(outcome, paths, StudyMeta.read(paths), options), args.json)


def refresh_report(study_dir: str | Path) -> None:
    """(Re)write ``DIR/NAME/analysis/report.md`` at the end of a run, quietly (no stdout, no library
    warnings); a failure to analyse never fails the run: one warning line on stderr."""
    import contextlib
    import io
    import os
    import shutil
    import tempfile
    import warnings

    # A search writes nothing outside its storage and temp dir: matplotlib's config and font cache (in HOME
    # by default) go to a temp folder unless the user chose a place for them.
    scratch = None if "MPLCONFIGDIR" in os.environ else tempfile.mkdtemp(prefix="kdtune-mpl-")
    if scratch is not None:
        os.environ["MPLCONFIGDIR"] = scratch
    try:
        from results.report import analyse

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            analyse(study_dir)
    except Exception as exc:  # noqa: BLE001 - the trials are recorded; the report can be made later
        print(f"kdtune: warning: report.md was not rewritten ({one_line(exc)[:200]}); run "
              f"`kdtune analyse {study_dir}`", file=sys.stderr)
    finally:
        if scratch is not None:
            del os.environ["MPLCONFIGDIR"]
            shutil.rmtree(scratch, ignore_errors=True)


def _finish(outcome: SearchOutcome, as_json: bool) -> int:
    if (Path(outcome.study_dir) / "results").is_dir():
        refresh_report(outcome.study_dir)
    if outcome.extra.get("note") and not as_json:
        print(outcome.extra["note"])
    print_outcome(outcome.to_dict(), as_json)
    if outcome.interrupted and as_json:  # stdout holds only the JSON; the person still gets the way on
        print(f"stopped before all trials ran; continue with: kdtune resume {outcome.study_dir}", file=sys.stderr)
    return signals.exit_code() if outcome.interrupted else 0
