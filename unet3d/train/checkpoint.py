"""The resumable training state (weights, log rows, the config's hashes, every component's state) and the
weight files written after each epoch."""

from unet3d.errors import UserError
from unet3d.models.weights import load, load_weights, model_weights, save


def save_training_state(path, model, epoch, rows, config_hashes, **components):
    """Write everything a resume needs to ``path`` atomically: weights, log rows, the experiment's
    ``config_hashes()`` and the ``state_dict()`` of each component (``None`` stays ``None``)."""
    state = {"model": model_weights(model), "epoch": epoch, "rows": rows, "config_hash": config_hashes}
    state.update({name: None if part is None else part.state_dict() for name, part in components.items()})
    save(state, path)


def load_training_state(path, model, config_hashes, **components):
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
    changed = [key for key, value in config_hashes.items()
               if saved.get("config_hash", config_hashes).get(key) != value]
    if changed:
        raise UserError(
            f"{path}: config key(s) {', '.join(changed)} changed since this checkpoint was written; "
            "restore them to resume, or pass --restart to train this model again from scratch"
        )
    load_weights(model, saved["model"], path)
    for name, part in components.items():
        if part is not None and saved.get(name) is not None:
            part.load_state_dict(saved[name])
    return saved["rows"]


def save_models(weights, work_dir, epoch, improved, settings):
    """``model.pth``; ``model_best.pth`` when ``improved``; ``model_epoch<k>.pth`` every ``save_every_n_epochs``,
    keeping the last ``save_last_n_models``."""
    save(weights, work_dir / "model.pth")
    if improved and settings.save_best:
        save(weights, work_dir / "model_best.pth")
    every = settings.save_every_n_epochs
    if not every or epoch % every:
        return
    save(weights, work_dir / f"model_epoch{epoch}.pth")
    keep = settings.save_last_n_models
    if keep:
        saved = sorted(work_dir.glob("model_epoch*.pth"), key=lambda p: int(p.stem.removeprefix("model_epoch")))
        for old in saved[:-keep]:
            old.unlink()
