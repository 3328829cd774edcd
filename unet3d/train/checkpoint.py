"""Checkpoints: the resumable training state and the plain model weights."""

import hashlib
import json

import torch

from unet3d.atomic import atomic_path
from unet3d.errors import UserError

# Training keys that change when or what is saved, not what is learned: a checkpoint
# made under other values of these still resumes.
BOOKKEEPING_KEYS = frozenset({
    "n_epochs", "save_best", "save_every_n_epochs", "save_last_n_models", "early_stopping_patience", "compile",
})
HASHED_SECTIONS = ("model", "loss", "optimizer", "scheduler", "dataset", "training")


def save(obj, path):
    """``torch.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path, map_location="cpu"):
    """``torch.load`` with ``weights_only=True``; an unreadable file is a UserError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: cannot read as a unet3d checkpoint ({error.__class__.__name__}: {reason})") from None


def model_weights(model):
    """The model's state dict, without the ``module.`` prefix that DDP/DataParallel add."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    return model.state_dict()


def load_model_weights(model, path):
    """Load plain weights (or a training checkpoint's ``model`` entry) into ``model``, strictly."""
    state = load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return _load_weights(model, state, path)


def _load_weights(model, state, path):
    state = {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the config's model ({first})") from None
    return model


def config_hash(config, training_cases, validation_cases):
    """Short hashes of each part of ``config`` that shapes training, by config key."""
    parts = {section: config.get(section) for section in HASHED_SECTIONS}
    parts["training"] = {k: v for k, v in (parts["training"] or {}).items() if k not in BOOKKEEPING_KEYS}
    # Case ids rather than paths, so a data folder that moves as a whole still resumes.
    parts["training_filenames"] = [case["id"] for case in training_cases]
    parts["validation_filenames"] = [case["id"] for case in validation_cases]
    return {
        key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        for key, value in parts.items()
    }


def save_training_state(path, model, epoch, rows, hashes, **components):
    """Write everything a resume needs to ``path`` atomically: weights, log rows, config hash and
    the ``state_dict()`` of each component (``None`` stays ``None``)."""
    state = {"model": model_weights(model), "epoch": epoch, "rows": rows, "config_hash": hashes}
    state.update({name: None if part is None else part.state_dict() for name, part in components.items()})
    save(state, path)


def load_training_state(path, model, hashes, **components):
    """Restore what ``save_training_state`` wrote into ``model`` and ``components``; returns the log rows.

    A checkpoint made with different training settings is refused, naming the changed keys.
    """
    try:
        saved = load(path)
    except UserError as error:
        raise UserError(f"{error}; pass --restart to train this model again from scratch") from None
    if not isinstance(saved, dict) or not {"model", "rows"} <= saved.keys():
        raise UserError(f"{path}: not a unet3d training checkpoint (no model and log rows); "
                        "pass --restart to train this model again from scratch")
    changed = [key for key, value in hashes.items() if saved.get("config_hash", hashes).get(key) != value]
    if changed:
        raise UserError(
            f"{path}: config key(s) {', '.join(changed)} changed since this checkpoint was written; "
            "restore them to resume, or pass --restart to train this model again from scratch"
        )
    _load_weights(model, saved["model"], path)
    for name, part in components.items():
        if part is not None and saved.get(name) is not None:
            part.load_state_dict(saved[name])
    return saved["rows"]
