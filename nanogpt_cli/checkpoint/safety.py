"""Reading pickles that other tools wrote, without running anything they contain.

A pickle can call any function while it loads, so a ``.pt`` or ``meta.pkl`` from the internet
is a program. ``.pt`` files go through ``torch.load(weights_only=True)``, which admits only
tensors and plain containers; ``meta.pkl`` goes through an unpickler that admits only dicts,
lists, strings and ints: it resolves no class or function at all, so a payload that names
one is refused before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, first_line


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


_PLAIN = (dict, list, str, int)


def _check_plain(value: Any) -> None:
    # Tuples, floats, bytes, sets and the like need no class lookup, but a meta.pkl has no
    # business holding them: admit exactly what nanoGPT's prepare.py writes.
    if isinstance(value, bool) or not isinstance(value, _PLAIN):
        raise pickle.UnpicklingError(f"it holds a {type(value).__name__}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k)
            _check_plain(v)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v)


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` if it holds only dicts, lists, str and int; refuse anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
        _check_plain(value)
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        RecursionError,
    ) as e:  # RecursionError: a container that holds itself
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data pickle ({e}); only dicts, "
            "lists, strings and ints are read from a meta.pkl"
        ) from None
    return value


def load_torch_file(path: str | Path, *, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``, to the CPU; unsafe content is refused.

    With ``mmap``, tensors stay on disk until used (for files in torch's zip format).
    """
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = [line.strip() for line in str(e).strip().splitlines()]
        refused = next((line for line in reason if "GLOBAL" in line or "global" in line), "")
        if not refused:  # not a pickle at all: random bytes, another file type
            detail = next((line for line in reason if line.startswith("Unsupported")), "")
            raise CheckpointError(
                f"{path} is not a checkpoint (not a file torch.save writes"
                + (f": {detail.lower()}" if detail else "")
                + ")"
            ) from None
        # torch's message explains which global was refused; that line says enough.
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain "
            f"data, which could run code ({refused}); only weights-only checkpoints are read"
        ) from None
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # a file in torch's legacy (non-zip) format
            return load_torch_file(path, mmap=False)
        why = first_line(e).split(". ")[0]  # torch's first sentence; the rest is advice
        raise CheckpointError(f"{path} is not a checkpoint or is truncated ({why})") from None
    except EOFError:
        raise CheckpointError(f"{path} is not a checkpoint (it is empty or cut short)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, IndexError, KeyError, TypeError, RecursionError):
        # what the unpickler trips on in random bytes, which may also look like a pickle
        # for a few opcodes: the same answer as for bytes that never did
        raise CheckpointError(
            f"{path} is not a checkpoint (not a file torch.save writes)"
        ) from None
