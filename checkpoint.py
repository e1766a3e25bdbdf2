"""Checkpoint files: written atomically, loaded with torch.load(weights_only=True).

A checkpoint is a dict of tensors and plain Python types (dict, list, tuple, str, int, float, bool,
None), so loading it never runs pickled code.
"""

from __future__ import annotations

import os
import pickle
import tempfile

import torch

from settings import UserError

FORMAT = "dynactglu-checkpoint-v1"


def save_checkpoint(obj: dict, path: str) -> None:
    """Write obj to path through a temporary file in the same folder, fsync it, then rename it over path.

    A crash or a failed write leaves the previous file at path intact.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by save_checkpoint, raising UserError for anything else."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} not found; check out_dir and the checkpoint name")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"checkpoint {path!r} contains objects other than tensors and plain Python types ({first_line}); "
            "only load checkpoints written by this repo"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"checkpoint {path!r} is unreadable or truncated ({type(e).__name__}: {e}); use an intact checkpoint") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise UserError(f"checkpoint {path!r} was not written by this repo's train.py (no '{FORMAT}' marker); pass a checkpoint from train.py")
    return obj
