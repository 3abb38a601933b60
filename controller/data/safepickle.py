"""Unpickling that cannot run code or touch memory it was not given, for the two pickle formats we must read (the
seed project's results.pkl and the CIFAR-100 python archive).

An allowlist of real classes is not enough: numpy's own `dtype` and `_reconstruct` accept a forged state (an
object field with its reference-count flags cleared) that makes numpy dereference bytes of the file as pointers.
So no real numpy callable, and no real class, is ever handed to the unpickler. Each allowed name resolves to a
stand-in that only records what the pickle asked for (a dtype's type code, an array's shape and raw bytes, an
object's state); once the file is read, `_resolve` checks every record and builds plain numeric arrays with
`np.frombuffer` from the few type codes below. Anything else is refused, naming what it was.
"""

from __future__ import annotations

import codecs
import collections
import datetime
import io
import math
import pickle
import reprlib
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from controller.errors import ConfigError

# Plain numbers only: no object ('O'), void/structured ('V'), string or datetime dtypes.
NUMERIC_CODES = frozenset(f"{kind}{size}" for kind, sizes in (("b", "1"), ("i", "1248"), ("u", "1248"),
                                                              ("f", "248")) for size in sizes)
BYTE_ORDERS = frozenset("<>|=")
MAX_DIMS = 8


_REPR = reprlib.Repr()  # 3.11 takes no arguments
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring = 2, 4, 4, 4, 40


def _short(value: Any) -> str:
    """A bounded repr: a pickle can share one tuple into a structure whose full repr takes exponential time (the
    fuzzer's 1 kB timeout)."""
    return _REPR.repr(value)


class Refused(Exception):
    """Raised inside the unpickler; restricted_loads turns it into a ConfigError naming the file's kind."""


class _Dtype:
    """numpy.dtype(code, align, copy) as recorded; __setstate__ accepts only a plain scalar type's state."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if not isinstance(code, str) or code not in NUMERIC_CODES:
            raise Refused(f"dtype {_short(code)} (only plain numeric dtypes: {', '.join(sorted(NUMERIC_CODES))})")
        self.code = code
        self.order = "|" if code[1] == "1" else "="

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags): for a plain scalar
        # type the middle three are None and flags 0. Anything else is a structured or object dtype.
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and state[1] in BYTE_ORDERS and state[2:5] == (None, None, None) and state[7] == 0):
            raise Refused(f"dtype {self.code} with state {_short(state)} (a structured or object dtype)")
        self.order = state[1]

    def real(self) -> np.dtype[Any]:
        return np.dtype(f"{self.order if self.order != '=' else ''}{self.code}")


class _Array:
    """An array from numpy's _reconstruct(ndarray, (0,), b'b') + __setstate__ (protocols 0-4)."""

    def __init__(self, *args: Any):
        if not args or args[0] is not _ndarray:
            raise Refused("_reconstruct of something other than ndarray")
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def real(self) -> np.ndarray[Any, Any]:
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise Refused(f"array state {_short(state)}")
        _, shape, dtype, fortran, raw = state
        return _array(raw, dtype, shape, "F" if fortran else "C")


def _ndarray() -> None:
    """The name numpy.ndarray resolves to: only an argument of _reconstruct, never called."""
    raise Refused("numpy.ndarray called directly")


def _frombuffer(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray[Any, Any]:
    """numpy._core.numeric._frombuffer (protocol 5's in-band arrays)."""
    return _array(raw, dtype, shape, order)


def _array(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray[Any, Any]:
    if isinstance(raw, str):
        raw = raw.encode("latin1")  # Python 2 pickles, read with encoding=latin1
    if not isinstance(dtype, _Dtype) or not isinstance(raw, (bytes, bytearray)) or order not in ("C", "F"):
        raise Refused("an array that is not raw bytes of a plain numeric dtype")
    if (not isinstance(shape, tuple) or len(shape) > MAX_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise Refused(f"array shape {_short(shape)}")
    real = dtype.real()
    if math.prod(shape) * real.itemsize != len(raw):
        raise Refused(f"array shape {shape} of {real} does not match its {len(raw)} bytes")
    flat = np.frombuffer(bytes(raw), dtype=real)
    return flat.reshape(shape, order=order).copy()


def _scalar(dtype: Any, raw: Any = b"") -> Any:
    """numpy._core.multiarray.scalar: a numpy scalar, read back as a Python number."""
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(dtype, _Dtype) or not isinstance(raw, bytes) or len(raw) != dtype.real().itemsize:
        raise Refused("a scalar that is not one plain number")
    return np.frombuffer(raw, dtype=dtype.real())[0].item()


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """_codecs.encode: how protocol-2 pickles spell bytes (text, 'latin1'); no other codec. The types are checked
    before anything is converted: str() of a self-sharing tuple takes exponential time."""
    if not (isinstance(text, str) and isinstance(encoding, str)) \
            or encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise Refused(f"_codecs.encode with {_short(encoding)}")
    return codecs.encode(text, "latin1")


class Opaque:
    """An object of an allowed class, as its class name and pickled state (never an instance of that class)."""

    name = "object"
    state: Any = None  # NEWOBJ makes one without __init__; a pickle may give it no state at all

    def __init__(self, *args: Any) -> None:
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _opaque(qualname: str) -> type[Opaque]:
    return type("Opaque", (Opaque,), {"name": qualname})


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Opaque:
    """copyreg._reconstructor: an Opaque of an allowed class."""
    if not (isinstance(cls, type) and issubclass(cls, Opaque)):
        raise Refused("copyreg._reconstructor of a class that is not allowed")
    return cls()


# Hashing walks a key's every path: a tuple that shares itself level by level (DUP, TUPLE2: a few bytes per level)
# has 2^depth of them, walked in one C call holding the GIL. Only keys and set members whose walk is short are taken.
MAX_KEY_NODES = 256


def _hashable(value: Any) -> Any:
    """The value, if hashing it is cheap: a plain scalar, or tuples of them with few nodes in all (shared ones
    counted each time they are reached, as hashing reaches them)."""
    todo, nodes = [value], 0
    while todo:
        item = todo.pop()
        nodes += 1
        if nodes > MAX_KEY_NODES:
            raise Refused(f"a dict key or set member of more than {MAX_KEY_NODES} parts")
        if isinstance(item, tuple):
            todo.extend(item)
        elif not (item is None or isinstance(item, (bool, int, float, complex, str, bytes))):
            raise Refused(f"a dict key or set member of type {type(item).__name__}")
    return value


def _set(items: Any = ()) -> set[Any]:
    """builtins.set, taking only cheaply hashed members."""
    if not isinstance(items, (list, tuple)):
        raise Refused(f"set() of a {type(items).__name__}")
    return {_hashable(v) for v in items}


def _ordered_dict(items: Any = ()) -> collections.OrderedDict[Any, Any]:
    """collections.OrderedDict, from (key, value) pairs with cheaply hashed keys."""
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in items):
        raise Refused("OrderedDict() of something other than (key, value) pairs")
    return collections.OrderedDict((_hashable(k), v) for k, v in items)


_NUMPY: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY[(_mod, "_reconstruct")] = _Array
    _NUMPY[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY[(_mod, "_frombuffer")] = _frombuffer
_NUMPY[("numpy", "ndarray")] = _ndarray
_NUMPY[("numpy", "dtype")] = _Dtype

NUMPY_AND_BUILTINS: dict[tuple[str, str], Any] = {
    **_NUMPY,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "set"): _set,
    ("builtins", "set"): _set,
    ("collections", "OrderedDict"): _ordered_dict,
    ("_codecs", "encode"): _encode,
    ("datetime", "datetime"): datetime.datetime,  # C-checked: a datetime from its 10-byte state
}


def with_classes(*qualnames: str) -> dict[tuple[str, str], Any]:
    """NUMPY_AND_BUILTINS plus classes read as Opaque records ('hyperopt.base.Trials')."""
    extra = {tuple(q.rsplit(".", 1)): _opaque(q) for q in qualnames}
    return {**NUMPY_AND_BUILTINS, **extra}  # type: ignore[dict-item]


# The pure-Python unpickler: the C one sizes its memo table by the largest index a pickle names, so a few bytes
# (LONG_BINPUT 1484937859, found by the fuzzer) allocate gigabytes. This one keeps its memo in a dict.
def _load_bytearray8(self: Any) -> None:
    # The stock one allocates the length the pickle claims before reading (18 GB from a 3 kB file).
    (size,) = struct.unpack("<Q", self.read(8))
    data = self.read(size)
    if len(data) != size:
        raise pickle.UnpicklingError(f"a bytearray8 of {size} bytes with {len(data)} left in the file")
    self.append(bytearray(data))


# A memo entry costs ~85 bytes and MEMOIZE one: the real files need a few thousand.
MAX_MEMO = 100_000


class _Memo(dict[int, Any]):
    def __setitem__(self, key: int, value: Any) -> None:
        if len(self) >= MAX_MEMO and key not in self:
            raise Refused(f"a pickle that memoizes more than {MAX_MEMO} objects")
        super().__setitem__(key, value)


def _keys_checked(load: Callable[[Any], None], items: Callable[[Any], list[Any]]) -> Callable[[Any], None]:
    """An opcode's handler that first checks the keys or members it is about to hash (items: them, from the
    unpickler's stack, without popping)."""
    def checked(self: Any) -> None:
        for item in items(self):
            _hashable(item)
        load(self)
    return checked


def _since_mark(self: Any) -> list[Any]:
    return list(self.stack)  # MARK started a new stack: what is on it came after the mark


def _pairs_since_mark(self: Any) -> list[Any]:
    return list(self.stack[::2])


def _setitem_key(self: Any) -> list[Any]:
    return list(self.stack[-2:-1])


_STOCK: dict[int, Any] = pickle._Unpickler.dispatch
_HASHING = {
    pickle.SETITEM[0]: _keys_checked(_STOCK[pickle.SETITEM[0]], _setitem_key),
    pickle.SETITEMS[0]: _keys_checked(_STOCK[pickle.SETITEMS[0]], _pairs_since_mark),
    pickle.DICT[0]: _keys_checked(_STOCK[pickle.DICT[0]], _pairs_since_mark),
    pickle.ADDITEMS[0]: _keys_checked(_STOCK[pickle.ADDITEMS[0]], _since_mark),
    pickle.FROZENSET[0]: _keys_checked(_STOCK[pickle.FROZENSET[0]], _since_mark),
}


class _Restricted(pickle._Unpickler):
    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: _load_bytearray8, **_HASHING}

    def __init__(self, data: bytes, allowed: dict[tuple[str, str], Any]):
        super().__init__(io.BytesIO(data), encoding="latin1")  # latin1: Python 2 pickles
        self.memo = _Memo()
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent id")


def _resolve(obj: Any, seen: dict[int, Any]) -> Any:
    """The loaded structure with every record replaced by what it stands for, checked."""
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, (_Array, _Dtype)):
        out: Any = obj.real()
    elif isinstance(obj, Opaque):
        out = obj
        seen[key] = out
        obj.state = _resolve(obj.state, seen)
        return out
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        seen[key] = out
        for k, v in obj.items():
            out[_resolve(k, seen)] = _resolve(v, seen)
        return out
    elif isinstance(obj, list):
        out = []
        seen[key] = out
        out.extend(_resolve(v, seen) for v in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, seen) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = type(obj)(_resolve(v, seen) for v in obj)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray, datetime.datetime,
                                         np.ndarray)):
        out = obj
    elif isinstance(obj, Callable):  # type: ignore[arg-type]
        raise Refused(f"a bare {getattr(obj, '__name__', type(obj).__name__)}")
    else:
        raise Refused(f"a {type(obj).__name__}")
    seen[key] = out
    return out


def restricted_loads(data: bytes, allowed: dict[tuple[str, str], Any], what: str) -> Any:
    """`what` says what the file should hold, for the error message. Whatever the bytes, the result is a
    ConfigError or plain data: dicts, lists, numbers, strings, numeric ndarrays and Opaque records."""
    try:
        return _resolve(_Restricted(data, allowed).load(), {})
    except Refused as e:
        raise ConfigError(f"refusing to unpickle {e}: {what}; the file was not loaded") from e
    except RecursionError as e:
        raise ConfigError(f"not a readable pickle ({what}): nested too deeply") from e
    except MemoryError:
        raise  # the reader's memory limit (controller/data/sandbox.py) names it; not the file's format
    except Exception as e:
        raise ConfigError(f"not a readable pickle ({what}): {type(e).__name__}: {e}"[:500]) from e
