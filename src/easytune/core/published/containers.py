"""Reading released files safely and matching their weights to a module, key by key.

- :func:`load_tensor_file`: ``torch.load(weights_only=True)`` -- tensors, dicts, lists, strings, numbers; a pickled
  object (a class instance, a function) is refused by name, never constructed.
- :func:`load_plain_pickle`: an allow-list unpickler for plain pickles (GloVe word lists): lists, dicts, tuples,
  strings, numbers only; any global (class, function) is refused.
- :func:`load_weights`: ``module.load_state_dict`` after checking every key and shape, so that a renamed, missing or
  extra key or a wrong shape is one :class:`PublishedAssetError` naming the file and the keys.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


class PublishedAssetError(ValueError):
    """A published asset is missing, of the wrong kind, holds a refused object, or does not match its module."""


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise PublishedAssetError(f"{path}: no such file (expected {what})")
    return path


def load_tensor_file(path: str | Path, what: str = "a torch checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; a refused pickled object or an unreadable file is one
    :class:`PublishedAssetError` naming the file (and the refused global when torch names it)."""
    path = _require_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        name = found.group(1) if found else "a non-tensor object"
        raise PublishedAssetError(
            f"{path}: holds a pickled object ({name}) outside the allow-list (tensors, dicts, lists, strings, "
            f"numbers); it is not loaded because unpickling it could run code. Re-save only the weights "
            f"(e.g. its 'state_dict') in a trusted environment") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise PublishedAssetError(f"{path}: not readable as {what} ({type(exc).__name__}: {exc})") from None


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - the allow-list is empty
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def load_plain_pickle(path: str | Path, what: str = "a pickle of plain data") -> Any:
    """Unpickle ``path`` allowing only lists, dicts, tuples, sets, strings, bytes, numbers, booleans and None."""
    path = _require_file(path, what)
    try:
        return _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as exc:
        raise PublishedAssetError(f"{path}: holds a pickled object outside the allow-list (lists, dicts, strings, "
                                  f"numbers): {exc}; it is not loaded") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise PublishedAssetError(f"{path}: not readable as {what} ({type(exc).__name__}: {exc})") from None


def lightning_state_dict(ckpt: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a (Lightning-style) checkpoint dict: tensors by name."""
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise PublishedAssetError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry; found {keys})")
    return tensor_dict(ckpt["state_dict"], path, "state_dict")


def tensor_dict(state: Any, path: str | Path, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise PublishedAssetError(f"{path}: {where} is a {type(state).__name__}, not a dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise PublishedAssetError(f"{path}: {where} entries that are not tensors: {bad[:5]}")
    return dict(state)


def take_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, prefix: str = "",
                 ignore: Iterable[str] = ()) -> None:
    """Load ``state`` (keys without ``prefix``) into ``module`` strictly; keys in ``ignore`` (without prefix) are
    dropped first. Every missing key, extra key and shape mismatch is named (with the prefix) in one error."""
    ignore = set(ignore)
    state = {k: v for k, v in state.items() if k not in ignore}
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        problems.append("missing key(s) " + ", ".join(prefix + k for k in missing))
    if extra:
        problems.append("unexpected key(s) " + ", ".join(prefix + k for k in extra))
    for k in sorted(set(expected) & set(state)):
        if tuple(state[k].shape) != tuple(expected[k].shape):
            problems.append(f"key {prefix + k} has shape {list(state[k].shape)}, the released architecture "
                            f"needs {list(expected[k].shape)}")
    if problems:
        raise PublishedAssetError(f"{path}: weights do not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()},
                           strict=True)


def shape_of(state: Mapping[str, torch.Tensor], key: str, path: str | Path, ndim: int) -> tuple[int, ...]:
    """Shape of ``state[key]`` (which must exist with ``ndim`` dimensions), for reading sizes off a checkpoint."""
    if key not in state:
        raise PublishedAssetError(f"{path}: missing key {key}")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise PublishedAssetError(f"{path}: key {key} has shape {list(shape)}, expected {ndim} dimensions")
    return shape


def count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive indices i with some key starting ``{prefix}{i}.``."""
    i = 0
    while any(k.startswith(f"{prefix}{i}.") for k in state):
        i += 1
    return i
