"""The command line's first page: ``--help`` of every command is made from the same tables the README's data
forms and spaces come from, shows every option's default and cites no internal file; ``--config`` takes
dotted keys; ``search`` without ``--name`` makes one up. Fast: no Ray."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from kdcore import BUILTIN_NAMES
from search_spaces import builtin_spaces
from tune.cli import build_parser, main
from tune.commands import default_name


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["train", "search", "resume", "analyse", "spaces"])
def test_every_option_of_every_command_shows_its_default(command: str) -> None:
    p = _commands()[command]
    text = p.format_help()
    formatter = p.formatter_class(prog="kdtune")
    for action in p._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        shown = formatter._get_help_string(action)  # type: ignore[attr-defined]
        assert "default" in shown, (command, action.option_strings, shown)
    assert "kdcore/" not in text and ".py" not in text and "DESIGN" not in text, text


@pytest.mark.parametrize("command", ["train", "search"])
def test_data_help_lists_every_data_form(command: str) -> None:
    text = " ".join(_commands()[command].format_help().split())
    for name in BUILTIN_NAMES:
        assert f"builtin:{name}" in text
    assert all(form in text for form in (".npz", "CIFAR-10/100 folder", "pickle")), text


def test_space_help_lists_every_builtin_space() -> None:
    text = re.sub(r"-\s+", "-", " ".join(_commands()["search"].format_help().split()))
    assert all(name in text for name in builtin_spaces()), text


def test_search_without_a_name_makes_one_as_make_demo_does() -> None:
    assert re.fullmatch(r"smoke-\d{8}-\d{6}", default_name("smoke"))
    assert re.fullmatch(r"my-space-\d{8}-\d{6}", default_name("/some/where/my space.yaml"))
    assert build_parser().parse_args(["search"]).name is None  # --name is no longer required


def test_search_without_a_name_refuses_bad_input_in_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["search", "--space", "smoke", "--storage", str(tmp_path), "--num-samples", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--num-samples must be >= 1" in err[0], err


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_config_takes_dotted_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``student.lr: 0.01`` at the top level was refused as an unknown key, with no word on nesting."""
    path = _config(tmp_path, "seeds: [0]\nstudent.lr: 0.01\nstudent: {epochs: 1}\nbaseline.epochs: 1\n"
                             "teacher.epochs: 1\n")
    rc = main(["train", "--config", path, "--json", "--quiet", "--batch-size", "512"])
    out = capsys.readouterr().out
    assert rc == 0
    config = json.loads(out)["config"]
    assert config["student"]["lr"] == 0.01 and config["student"]["epochs"] == 1 and config["baseline"]["epochs"] == 1


def test_config_with_a_setting_given_both_ways_says_how_to_give_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, "student.lr: 0.01\nstudent: {lr: 0.02}\n")
    rc = main(["train", "--config", path, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "student.lr is given twice" in err[0] and "give it once" in err[0], err
