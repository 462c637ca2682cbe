"""The numpy-only unpickler: how kdtune reads a pickle (the reference files, CIFAR's batches) safely.

A pickle runs whatever code its author chose, so every pickle is read through ``_NumpyOnlyUnpickler``,
which admits numpy arrays and dtypes and refuses every other global *before* anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from kdcore.errors import DataError, one_line


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the globals numpy needs to rebuild arrays, and nothing else."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset({
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol 2 stores array bytes as latin-1 text; encode only turns it back
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        raise DataError(
            f"refusing to load {module}.{name}: a dataset pickle may hold numpy arrays only "
            "(this file would run code when loaded)"
        )


def read_pickle(path: Path, *, what: str = "dataset pickle", hint: str = "", encoding: str = "ASCII") -> Any:
    """The object pickled in the file at ``path``, through the numpy-only unpickler; any failure is one line.

    ``what`` names the kind of file in messages, ``hint`` follows the "not a pickle at all" message, and
    ``encoding="bytes"`` reads Python 2 pickles (CIFAR's) with their ``str`` as ``bytes``.
    """
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"{path}: not a readable {what}: the file is empty")
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        text = " ".join(str(exc).split())  # all of it: some of pickle's messages span two lines
        if isinstance(exc, EOFError) or "truncated" in text:
            raise DataError(f"{path}: not a readable {what}: the file ends before its pickle does "
                            "(truncated)") from None
        # a foreign file's first byte is seldom a pickle opcode; "P" (a zip's "PK") is the persistent-id one
        if "invalid load key" not in text and "persistent" not in text:
            raise DataError(f"{path}: not a readable {what} ({text})") from None
        if raw.startswith(b"PK\x03\x04"):
            shown = "a zip archive's signature: an .npz file needs a name ending in .npz"
        else:
            head = raw[:24].decode("utf-8", "replace").strip().splitlines()
            shown = repr(head[0]) if head and head[0].isprintable() else "binary data"
        raise DataError(f"{path}: not a readable {what}: it is not a pickle at all (it starts with "
                        f"{shown}){hint}") from None
    except Exception as exc:  # noqa: BLE001 - any other unpickling failure means a corrupt or foreign file
        raise DataError(f"{path}: not a readable {what} ({type(exc).__name__}: {one_line(exc)})") from None
