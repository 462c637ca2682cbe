"""The ``kdtune`` command line: ``train``, ``search``, ``resume``, ``analyse``, ``spaces``.

Only ``main()`` configures the process. Each subcommand imports what it needs when it runs, so that
``kdtune train`` never pays for importing Ray. Every error a user can cause ends as one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kdcore import safe_load
from tune.errors import KDTuneError

EXIT_USAGE = 2
DEFAULT_DATA = "builtin:d0.5"


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, but got {text!r}") from None


def _parse_batch(text: str) -> int | None:
    if text.lower() in ("full", "none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be an integer or 'full', but got {text!r}") from None


def _parse_set(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (e.g. kd.alpha=0.3), but got {text!r}")
    try:
        return key.strip(), safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"--set {key}: value {value!r} is not valid YAML") from None


def _read_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise KDTuneError(f"config file not found: {p}")
    try:
        data = safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise KDTuneError(f"{p}: cannot be read as a text file ({exc})") from None
    except yaml.YAMLError as exc:
        raise KDTuneError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KDTuneError(f"{p}: expected a mapping of settings, but got {type(data).__name__}")
    return data


def _train_config(args: argparse.Namespace) -> Any:
    from kdcore import ExperimentConfig

    config = ExperimentConfig.from_dict(_read_yaml(args.config)) if args.config else ExperimentConfig()
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


def _format_method_table(result: dict[str, Any]) -> str:
    label = "validation" if result["protocol"] == "seed" else "holdout"
    rows = [f"{'method':<11} {label + ' acc %':>17} {'inner acc %':>13} {'best epoch':>11}"]
    for name, m in result["methods"].items():
        rows.append(
            f"{name:<11} {100 * m['holdout_acc_mean']:>8.2f} ± {100 * m['holdout_acc_std']:<6.2f} "
            f"{100 * m['inner_acc_mean']:>13.2f} {m['best_epoch_mean']:>11.0f}"
        )
    return "\n".join(rows)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    import kdcore
    from kdcore import EpochReport, run_experiment
    from tune.progress import ProgressLine

    if args.threads < 1:
        raise KDTuneError(f"--threads must be >= 1, but got {args.threads}")
    origin: dict[str, Any] | None = None
    if args.from_study is not None:
        from tune.rerun import check_data, study_trial_config

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
    from tune.plan import check_task

    check_task(config, dataset, absolute=False)  # a bad layout or checkpoint: one line before any training
    device = _resolve_device(args.device)
    if origin is not None:
        check_data(origin, dataset.fingerprint(), dataset.source)
        if not args.json:
            print(_describe_origin(origin), flush=True)
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
        print(_format_method_table(result))
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


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in params.items())


def _describe_origin(origin: dict[str, Any]) -> str:
    """The first line of ``train --from``: which trial of which study, its objective value and params."""
    value, metric = origin["value"], origin["metric"]
    score = ""
    if isinstance(value, float):
        shown = f"{100 * value:.2f} %" if metric.endswith("_acc") else f"{value:.4g}"
        score = f", {metric.replace('_', ' ')} {shown}"
    return (f"re-training trial {origin['trial']} ({origin['state']}{score}) of study {origin['study']}: "
            f"{_format_params(origin['params'])}")


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
        return 0
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary["trials"].items() if k != "total") or "no trials"
    print(f"study {summary['study']}: {summary['trials'].get('total', 0)} trials ({counts})")
    best, base = summary.get("best"), summary.get("baseline")
    if best:
        print(f"best: trial {best['number']}, holdout {100 * best['holdout_acc_mean']:.2f} ± "
              f"{100 * (best['holdout_acc_std'] or 0):.2f} %, inner {100 * best['inner_acc_mean']:.2f} %")
    if base:
        print(f"mixed baseline: holdout {100 * base['holdout_acc_mean']:.2f} ± {100 * (base['holdout_acc_std'] or 0):.2f} %")
    for i, (method, vs) in enumerate((summary.get("comparisons") or {}).items()):
        interval = vs.get("ci95")
        ci = f", 95 % CI [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]" if interval else ""
        tag = " (the comparison reported)" if i == 0 else ""
        print(f"best - {method}{tag}: {100 * vs['diff_mean']:+.2f} points{ci}, p = {vs['p_value']:.3g}; "
              f"{method} holdout {100 * vs['holdout_acc_mean']:.2f} %")
    for line in _analysis_lines(summary):
        print(line)
    print(f"report: {summary['report']}")
    return 0


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0):.2f} %"


def _analysis_lines(summary: dict[str, Any]) -> list[str]:
    """The teachers, the best trial's per-class accuracy, the parameter counts and the kd.method comparison,
    a line each (what ``kdtune analyse`` adds to its headline; the report has the tables)."""
    lines = []
    for t in summary.get("teachers") or []:
        lines.append(f"{t['method']}: {t['knows']}; holdout on its own classes {_pm(t['holdout_acc_mean'], t['holdout_acc_std'])}"
                     f" ({t['n_seeds']} seeds)")
    per_class = summary.get("class_accuracy")
    if per_class:
        shared = set(per_class.get("shared_classes") or [])
        accs = per_class["accuracy"]["student"]
        cells = " ".join(f"{c}{'*' if c in shared else ''} {'-' if a is None else f'{100 * a:.1f}'}"
                         for c, a in zip(per_class["classes"], accs))
        lines.append(f"best per class (holdout %{', * shared' if shared else ''}): {cells}")
    counts = summary.get("parameter_counts") or {}
    parts = []
    if counts.get("student") is not None:
        projector = f" (projector {counts['projector']:,})" if counts.get("projector") is not None else ""
        parts.append(f"student {counts['student']:,}{projector}")
    if counts.get("baseline") is not None:
        parts.append(f"baseline {counts['baseline']:,}")
    parts += [f"{name} {n:,}" for name, n in (counts.get("teachers") or {}).items() if n is not None]
    if parts:
        lines.append("trainable parameters: " + ", ".join(parts))
    methods = summary.get("methods")
    against = (methods or {}).get("against")
    for entry in (methods or {}).get("methods", []):
        best, vs = entry["best"], entry["vs"]
        if best is None:
            lines.append(f"kd.method {entry['method']}: no COMPLETE trial ({entry['trials']['total']} recorded)")
            continue
        total = best["trainable"]["total"]
        line = (f"kd.method {entry['method']}: best trial {best['number']}, holdout "
                f"{_pm(best['holdout_acc_mean'], best['holdout_acc_std'])}, "
                f"{'-' if total is None else f'{total:,}'} params, head {best['head'] or '-'}")
        if vs is not None and against is not None:
            ci = vs.get("ci95")
            interval = f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
            line += f"; vs {against['method']} {100 * vs['diff_mean']:+.2f} points{interval}, p = {vs['p_value']:.3g}"
        lines.append(line)
    return lines


def cmd_spaces(args: argparse.Namespace) -> int:
    from search_spaces import builtin_spaces, load_space

    names = builtin_spaces()
    width = max(len(n) for n in names)
    for name in names:
        space = load_space(name)
        knobs = ", ".join(k.path for k in space.knobs)
        print(f"{name:<{width}} {space.description}\n{'':<{width}} knobs: {knobs}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    # Everything that can be checked without Ray is checked before Ray is imported (tune.plan is light).
    from tune.plan import SearchSettings, plan_study

    if "://" in args.storage:
        raise KDTuneError(
            f"--storage must be a folder every node mounts at the same path (NFS, Lustre, ...), but got the URI "
            f"{args.storage!r}: the Optuna journal and the teacher cache need POSIX file locks, which object "
            "stores lack; copy finished results there afterwards (see the README)")
    settings = SearchSettings(
        data=args.data, space=args.space, name=args.name, storage=Path(args.storage),
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, address=args.address, seed=args.seed,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, max_t=args.max_t,
        max_failures=args.max_failures, tune_baseline=args.tune_baseline, sampler=args.sampler,
        num_cpus=args.num_cpus,
    )
    paths, meta = plan_study(settings)
    args.study_dir = paths.root  # for the resume hint, however the run ends
    from tune.runner import search

    outcome = search(paths, meta, settings.run_options(quiet=args.quiet, verbose=args.verbose))
    return _finish(outcome, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    from tune.cluster import ClusterSpec
    from tune.plan import RunOptions

    options = RunOptions(ClusterSpec(args.address, args.num_cpus), args.max_failures, quiet=args.quiet,
                         verbose=args.verbose)
    args.study_dir = Path(args.study).expanduser().resolve()
    from tune.resume import resume

    return _finish(resume(args.study, more=args.more, options=options), args.json)


def _finish(outcome: Any, as_json: bool) -> int:
    from tune import signals

    if outcome.extra.get("note") and not as_json:
        print(outcome.extra["note"])
    _print_outcome(outcome.to_dict(), as_json)
    if outcome.interrupted and as_json:  # stdout holds only the JSON; the person still gets the way on
        print(f"stopped before all trials ran; continue with: kdtune resume {outcome.study_dir}", file=sys.stderr)
    return signals.exit_code() if outcome.interrupted else 0


def _print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(outcome, sys.stdout)
        sys.stdout.write("\n")
        return
    counts = ", ".join(f"{v} {k.lower()}" for k, v in outcome["trials"].items() if k != "total") or "none"
    print(f"study {outcome['study']}: {outcome['trials'].get('total', 0)} trials ({counts}) "
          f"in {outcome['seconds']:.0f} s")
    if outcome.get("interrupted"):
        print(f"stopped before all trials ran; continue with: kdtune resume {outcome['study']}")
    best = outcome.get("best")
    if not best:
        print("no trial completed, so there is no best configuration yet")
        return
    hold = best.get("holdout_acc_mean")
    hold_text = f", holdout {100 * hold:.2f} ± {100 * (best.get('holdout_acc_std') or 0):.2f} %" if hold else ""
    print(f"best: trial {best['number']}, inner acc {100 * best['inner_acc_mean']:.2f} %{hold_text}")
    for key, value in best["params"].items():
        print(f"  {key} = {value:.4g}" if isinstance(value, float) else f"  {key} = {value}")
    print(f"re-run it: kdtune train --from {outcome['study']} --trial {best['number']}")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs trials (search, resume)."""
    p.add_argument("--address", help="join this Ray cluster (default: start Ray locally)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker died")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--verbose", action="store_true",
                   help="a line on stderr per finished trial: number, state, score, seconds, parameters")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray kdtune starts (default: every core)")


def build_parser() -> argparse.ArgumentParser:
    from kdcore import KD_METHODS, __version__

    # No prefix matching: `--num-sample 5` must not silently mean --num-samples (nor a future flag).
    parser = argparse.ArgumentParser(prog="kdtune", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"kdtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", allow_abbrev=False, help="run one configuration over all seeds and print mean ± std per method")
    p.add_argument("--data", help=f"builtin:d0.25|d0.5|d0.75|d1.0 or a pickle path (default {DEFAULT_DATA})")
    p.add_argument("--from", dest="from_study", metavar="DIR/NAME",
                   help="re-train a trial of this study exactly: its params, fixed settings, data and seeds")
    p.add_argument("--trial", type=int, help="with --from: the Optuna trial number (COMPLETE or PRUNED)")
    p.add_argument("--rank", type=int, help="with --from: the K-th best COMPLETE trial (default 1, the best)")
    p.add_argument("--config", help="YAML file of experiment settings (see kdcore/config.py)")
    p.add_argument("--set", action="append", type=_parse_set, metavar="KEY=VALUE",
                   help="override any setting by dotted path, e.g. --set student.lr=0.003 (repeatable)")
    p.add_argument("--protocol", choices=["honest", "seed"])
    p.add_argument("--seeds", type=_parse_seeds, help="comma-separated, default 0,10,1234,99,2021")
    p.add_argument("--alpha", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("--kd-method", choices=list(KD_METHODS))
    p.add_argument("--epochs", type=int, help="epochs for baseline, teachers and student")
    p.add_argument("--lr", type=float, help="learning rate for baseline, teachers and student")
    p.add_argument("--optimizer", choices=["adam", "adamw", "adam_coupled", "sgd"])
    p.add_argument("--batch-size", type=_parse_batch, default=False, help="an integer or 'full'")
    p.add_argument("--patience", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", allow_abbrev=False, help="run an Optuna-guided (TPE) Ray Tune study with ASHA")
    p.add_argument("--data", default="builtin:d0.5", help="builtin:d0.25|d0.5|d0.75|d1.0 or a pickle path")
    p.add_argument("--space", default="default", help="a built-in space (kdtune spaces) or a YAML file")
    p.add_argument("--name", required=True, help="the study's name (a folder under --storage)")
    p.add_argument("--storage", default="studies", help="the folder that holds studies (default ./studies)")
    p.add_argument("--num-samples", type=int, default=20, help="how many trials (default 20)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions allowed, e.g. 0.25")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe",
                   help="Optuna's TPE (default) or random search, e.g. as a yardstick for TPE")
    p.add_argument("--grace-period", type=int,
                   help="ASHA: evaluations before a trial can stop (default: two thirds of the student's epochs)")
    p.add_argument("--reduction-factor", type=int, default=2,
                   help="ASHA: keep 1 in this many per rung (default 2, tune.runner.DEFAULT_REDUCTION_FACTOR)")
    p.add_argument("--max-t", type=int, help="ASHA: most evaluations (default: from the space)")
    p.add_argument("--tune-baseline", type=int, default=0, metavar="N",
                   help="also tune the no-KD baseline: a CE-only search of N trials with the same sampler, "
                        "in DIR/NAME/ce-baseline, reported beside the best student (default 0: none)")
    _add_run_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("resume", allow_abbrev=False, help="continue an interrupted study, or extend a finished one (--more N)")
    p.add_argument("study", help="the study folder, DIR/NAME")
    p.add_argument("--more", type=int, default=0, help="add N trials to the study's budget")
    _add_run_options(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("analyse", allow_abbrev=False, help="report a study from its Parquet tables: top K, baseline, importance, plots")
    p.add_argument("study", help="the study folder, DIR/NAME (running, interrupted or finished)")
    p.add_argument("--top-k", type=int, default=5, help="how many configurations to rank (default 5)")
    p.add_argument("--out", help="where to write report.md and the plots (default DIR/NAME/analysis)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.set_defaults(func=cmd_analyse)

    p = sub.add_parser("spaces", allow_abbrev=False, help="list the built-in search spaces")
    p.set_defaults(func=cmd_spaces)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from kdcore import KDCoreError
    from results.errors import ResultsError
    from tune import signals

    args = build_parser().parse_args(argv)
    if args.command in ("search", "resume"):
        from tune import cluster

        cluster.prepare_environment(local=args.address is None)
        signals.handle_sigterm()
    try:
        return int(args.func(args))
    except (KDCoreError, KDTuneError, ResultsError) as exc:
        print(f"kdtune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        study = getattr(args, "study_dir", None)
        hint = (f"; continue with: kdtune resume {study}"
                if study is not None and (Path(study) / "study.json").is_file() else "")
        print(f"kdtune {args.command}: interrupted{hint}", file=sys.stderr)
        return signals.exit_code()
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
