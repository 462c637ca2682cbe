"""Reading search spaces: from YAML text, from a file, or by name from the built-in ones shipped here."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import yaml

from kdcore import safe_load
from search_spaces.errors import SpaceError
from search_spaces.space import SearchSpace


def parse_space(text: str, source: str = "<string>") -> SearchSpace:
    """Parse YAML ``text`` (safe loading only; ``1e-4`` is a float) into a validated space; errors name ``source``."""
    try:
        data = safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpaceError(f"{source}: invalid YAML{where}: {' '.join(str(problem).split())}") from None
    return SearchSpace.from_dict(data, source=source, source_text=text)


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped with the package (``load_space`` accepts them)."""
    return sorted(
        p.name.removesuffix(".yaml") for p in files("search_spaces").iterdir() if p.name.endswith(".yaml")
    )


def load_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """Load a built-in space by bare name (``"default"``) or a YAML file by path.

    Anything containing a path separator or ending in ``.yaml``/``.yml`` is a path; anything else a name.
    """
    text = os.fspath(name_or_path)
    is_name = Path(text).name == text and not text.endswith((".yaml", ".yml"))
    if is_name and not isinstance(name_or_path, os.PathLike):
        names = builtin_spaces()
        if text not in names:
            raise SpaceError(
                f"unknown built-in search space {text!r}; built-in spaces are {names} "
                f"(give a path ending in .yaml to load your own file)"
            )
        resource = files("search_spaces") / f"{text}.yaml"
        return parse_space(resource.read_text(encoding="utf-8"), source=f"search_spaces/{text}.yaml")
    path = Path(text)
    try:
        source_text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such search-space file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(f"{path}: cannot read search-space file: {err}") from None
    return parse_space(source_text, source=str(path))
