"""Unpickling restricted to an allowlist of classes, for the two pickle formats we must read
(the seed project's results.pkl and the CIFAR-100 python archive). Anything else is refused before it
is looked up, so a pickle from a bucket cannot run code."""

from __future__ import annotations

import io
import pickle
from typing import Any

from controller.errors import ConfigError

NUMPY_AND_BUILTINS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
})


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: frozenset[tuple[str, str]], what: str):
        super().__init__(io.BytesIO(data), encoding="latin1")  # latin1: Python 2 pickles
        self.allowed = allowed
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise ConfigError(f"refusing to unpickle {module}.{name}: {self.what}; the file was not loaded")
        return super().find_class(module, name)


def restricted_loads(data: bytes, allowed: frozenset[tuple[str, str]], what: str) -> Any:
    """`what` says what the file should hold, for the error message."""
    try:
        return _Restricted(data, allowed, what).load()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"not a readable pickle ({what}): {e}") from e
