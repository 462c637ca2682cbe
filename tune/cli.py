"""The ``kdtune`` command line: ``train``, ``search``, ``resume``, ``analyse``, ``spaces``.

This module is the parser and ``main()``, the only place that configures the process (logging, Ray's
environment, the SIGTERM handler); the commands are in ``tune.commands``, what they print in
``tune.render``. Every error a user can cause ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kdcore import OPTIMIZERS, PROTOCOLS, KDCoreError, one_line, safe_load
from results.errors import ResultsError
from tune import cluster, signals
from tune.commands import DEFAULT_DATA, cmd_analyse, cmd_resume, cmd_search, cmd_spaces, cmd_train
from tune.errors import KDTuneError
from tune.faults import fault_message, storage_fault
from tune.plan import DEFAULT_REDUCTION_FACTOR, SAMPLER_NAMES

EXIT_USAGE = 2
EXIT_ENVIRONMENT = 1  # a storage fault (full disk, read-only folder): not bad input

# Loggers quieted below what they log by default, set before their library is imported. Optuna resets its
# own root logger ("optuna") to INFO when it is first imported, so its verbosity (optuna.logging.set_verbosity)
# cannot be set without importing it, which a refused `kdtune search` must not pay for; the loggers of the
# parts kdtune drives are set instead: no line per study created and trial told, its warnings kept.
QUIET_LOGGERS = {
    "optuna.study": logging.WARNING,
    "optuna.storages": logging.WARNING,
    "optuna.samplers": logging.WARNING,
    "optuna.trial": logging.WARNING,
    # Tune logs "Trials did not complete" with every trial id; the progress line counts errors.
    "ray.tune": logging.CRITICAL,
}


def configure_logging() -> None:
    """What kdtune shows of its libraries' logs (called by ``main()``; tests call it to run as it does)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


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


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: argparse's own where the help does not say it, "off" / "on"
    for a switch (options whose default is None say theirs in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if isinstance(action, argparse._StoreFalseAction):
            return f"{text} (default: on)"
        return text if action.default is None else f"{text} (default: %(default)s)"


def data_help() -> str:
    """What ``--data`` takes, from the same names as the README's "Data" line: the built-in sets
    (``kdcore.BUILTIN_NAMES``), an NPZ file, a CIFAR-10/100 folder, a reference-format pickle."""
    from kdcore import BUILTIN_NAMES

    return ("the data: " + ", ".join(f"builtin:{n}" for n in BUILTIN_NAMES)
            + " (2-D reference family, scikit-learn's 8x8 digits), a .npz file, a CIFAR-10/100 folder (normalised "
              "with the literature's constants; FOLDER:normalise=computed: with its training images' statistics), "
              "or a reference-format pickle (README, 'Your own data')")


def space_help() -> str:
    """What ``--space`` takes: the built-in spaces (``search_spaces.builtin_spaces``) or a YAML file."""
    from search_spaces import builtin_spaces

    return f"a built-in search space ({', '.join(builtin_spaces())}; `kdtune spaces` shows their knobs) or a YAML file"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs trials (search, resume)."""
    p.add_argument("--address", help="join this Ray cluster, HOST:PORT (default: start Ray locally)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker died")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--verbose", action="store_true",
                   help="a line on stderr per finished trial: number, state, score, seconds, parameters")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray kdtune starts (default: every core)")


def build_parser() -> argparse.ArgumentParser:
    from kdcore import KD_METHODS, ExperimentConfig, __version__

    base = ExperimentConfig()  # the defaults of `kdtune train` without --config
    seeds = ",".join(str(s) for s in base.seeds)
    # No prefix matching: `--num-sample 5` must not silently mean --num-samples (nor a future flag).
    parser = argparse.ArgumentParser(prog="kdtune", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"kdtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, allow_abbrev=False, help=text, description=text, formatter_class=_HelpFormatter)

    p = command("train", "run one configuration over all seeds and print mean ± std per method")
    p.add_argument("--data", help=f"{data_help()} (default: {DEFAULT_DATA})")
    p.add_argument("--from", dest="from_study", metavar="DIR/NAME",
                   help="re-train a trial of this study exactly: its params, fixed settings, data and seeds "
                        "(default: none, train the settings given here)")
    p.add_argument("--trial", type=int, help="with --from: the Optuna trial number, COMPLETE or PRUNED "
                                             "(default: the best, see --rank)")
    p.add_argument("--rank", type=int, help="with --from: the K-th best COMPLETE trial (default: 1, the best)")
    p.add_argument("--config", help="YAML file of experiment settings, nested (student: {lr: 0.01}) or dotted "
                                    "(student.lr: 0.01), the names --set takes (default: kdcore's defaults)")
    p.add_argument("--set", action="append", type=_parse_set, metavar="KEY=VALUE",
                   help="override any setting by dotted path, e.g. --set student.lr=0.003 (repeatable; "
                        "default: none)")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help=f"honest: select on inner folds, report the holdout; seed: as published "
                        f"(default: {base.protocol})")
    p.add_argument("--seeds", help=f"integers separated by commas or spaces (default: {seeds})")
    p.add_argument("--alpha", type=float, help=f"kd.alpha, the weight of the KD term (default: {base.kd.alpha})")
    p.add_argument("--temperature", type=float, help=f"kd.temperature (default: {base.kd.temperature})")
    p.add_argument("--kd-method", choices=list(KD_METHODS), help=f"kd.method (default: {base.kd.method})")
    p.add_argument("--epochs", type=int, help=f"epochs for baseline, teachers and student "
                                              f"(default: {base.student.epochs})")
    p.add_argument("--lr", type=float, help=f"learning rate for baseline, teachers and student "
                                            f"(default: {base.student.lr})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"for baseline, teachers and student "
                                                           f"(default: {base.student.optimizer})")
    p.add_argument("--batch-size", type=_parse_batch, default=False,
                   help=f"an integer or 'full' (default: {base.student.batch_size})")
    p.add_argument("--patience", type=int, help="epochs without improvement before stopping early "
                                                f"(default: {base.student.patience or 'never stop early'})")
    p.add_argument("--eval-every", type=int, help=f"evaluate every this many epochs (default: {base.eval_every})")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_train)

    p = command("search", "run an Optuna-guided (TPE) Ray Tune study with ASHA")
    p.add_argument("--data", default=DEFAULT_DATA, help=data_help())
    p.add_argument("--space", default="default", help=space_help())
    p.add_argument("--name", help="the study's name, a folder under --storage (default: SPACE-YYYYMMDD-HHMMSS, "
                                  "printed)")
    p.add_argument("--storage", default="studies", help="the folder that holds studies")
    p.add_argument("--num-samples", type=int, default=20, help="how many trials")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each trial (and reference job) holds")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each trial holds; fractions allowed, "
                                                                     "e.g. 0.25")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default="tpe",
                   help="Optuna's TPE, or random search as a yardstick for TPE")
    p.add_argument("--grace-period", type=int,
                   help="ASHA: evaluations of the student's last phase before a trial can stop, below the "
                        "trial's length (default: two thirds of the student's evaluations)")
    p.add_argument("--no-pruning", dest="pruning", action="store_false",
                   help="ASHA off: every trial runs to its end (default: ASHA stops weak trials at its rung)")
    p.add_argument("--reduction-factor", type=int, default=DEFAULT_REDUCTION_FACTOR,
                   help="ASHA: keep 1 in this many per rung")
    p.add_argument("--max-t", type=int, help="ASHA: most evaluations of the student's last phase "
                                             "(default: from the space)")
    p.add_argument("--tune-baseline", type=int, default=0, metavar="N",
                   help="also tune the no-KD baseline: a CE-only search of N trials with the same sampler, "
                        "in DIR/NAME/ce-baseline, reported beside the best student (default: 0, none)")
    _add_run_options(p)
    p.set_defaults(func=cmd_search)

    p = command("resume", "continue an interrupted study, or extend a finished one (--more N)")
    p.add_argument("study", help="the study folder, DIR/NAME")
    p.add_argument("--more", type=int, default=0, help="add N trials to the study's budget")
    _add_run_options(p)
    p.set_defaults(func=cmd_resume)

    p = command("analyse", "report a study from its Parquet tables: top K, baseline, importance, plots")
    p.add_argument("study", help="the study folder, DIR/NAME (running, interrupted or finished)")
    p.add_argument("--top-k", type=int, default=5, help="how many configurations to rank")
    p.add_argument("--out", help="where to write report.md and the plots (default: DIR/NAME/analysis)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.set_defaults(func=cmd_analyse)

    p = command("spaces", "list the built-in search spaces")
    p.set_defaults(func=cmd_spaces)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    if args.command in ("search", "resume"):
        cluster.prepare_environment(local=args.address is None)
        signals.handle_sigterm()
    try:
        return int(args.func(args))
    except (KDCoreError, KDTuneError, ResultsError) as exc:
        print(f"kdtune {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a full disk, a quota, a read-only or forbidden folder: the environment's fault,
        fault = storage_fault(exc)  # also when Ray wraps it (a TuneError carrying the journal's OSError)
        if fault is None:
            raise
        study = getattr(args, "study_dir", None)
        resumable = study is not None and (Path(study) / "study.json").is_file()
        print(f"kdtune {args.command}: error: {fault_message(*fault, Path(study) if study else None, resumable)}",
              file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        study = getattr(args, "study_dir", None)
        hint = (f"; continue with: kdtune resume {study}"
                if study is not None and (Path(study) / "study.json").is_file() else "")
        print(f"kdtune {args.command}: interrupted{hint}", file=sys.stderr)
        return signals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
