"""``safe_load`` for settings files: PyYAML's safe loader, with floats read as YAML 1.2 reads them.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string; people write learning rates that way.
The loader constructs nothing but plain data (no tags that import or run code).
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _SettingsLoader(yaml.SafeLoader):
    pass


_SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.VERBOSE),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """Parse YAML text into plain data; ``1e-3`` is the float 0.001."""
    return yaml.load(text, Loader=_SettingsLoader)
