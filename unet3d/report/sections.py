"""The report's sections: the run at a glance, the plan's reasons, learning curves, the folds, and per prediction
group its per-case table (worst first), volumes and pictures of its worst cases."""

import datetime
import platform
from pathlib import Path

import numpy as np

from unet3d.data.formats import image_channels, read_header
from unet3d.evaluate.metrics import voxel_spacing
from unet3d.report import charts, page
from unet3d.train.log import best_epoch

CASE_METRICS = (("dice", "Dice", 4), ("hd95", "HD95 mm", 2), ("predicted_volume_ml", "predicted ml", 2),
                ("reference_volume_ml", "reference ml", 2))

COUNTS = ("epochs", "best_epoch")  # cv_summary.csv's whole-number columns


def glance(inputs, device=None):
    """``(name, id, html)`` of the run at a glance: config, labels, data, models, time, versions."""
    experiment, facts = inputs.experiment, []
    if experiment is not None:
        facts += [("config", experiment.filename), ("model", experiment.model.name),
                  ("loss", experiment.loss.name), ("labels", label_text(experiment.labels))]
        facts += data_facts(experiment)
    elif inputs.groups:
        facts.append(("labels", label_text(inputs.groups[0].scheme)))
    for model in inputs.models:
        facts.append((f"{model.name}" if len(inputs.models) > 1 else "training", training_text(model, experiment)))
    if inputs.models:
        total = sum(float(model.log["epoch_time"].sum()) for model in inputs.models if "epoch_time" in model.log)
        facts.append(("training time", f"{total / 60:.1f} min ({total:.0f} s), the sum of the epochs' times"))
        facts.append(("device", device or "not recorded (the report was written apart from training)"))
    facts.append(("written with", versions()))
    facts.append(("written", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    return "at a glance", "glance", page.section("The run at a glance", page.table(("", ""), facts), "glance")


def label_text(scheme):
    """``regions: WT (2, 1, 4), TC (1, 4), ET (4)``: the mode and which values each name covers."""
    members = [scheme.values[i:] if scheme.hierarchy else (value,) for i, value in enumerate(scheme.values)]
    parts = [f"{name} ({', '.join(map(str, values))})" for name, values in zip(scheme.names, members)]
    return f"{scheme.mode}: {', '.join(parts)}"


def data_facts(experiment):
    """Case counts per group, channels, and the first case's grid."""
    counts = ", ".join(f"{group} {len(cases)}" for group, cases in experiment.groups.items())
    facts = [("cases", counts + (f"; {experiment.cross_validation.n_folds}-fold cross-validation of training"
                                 if experiment.cross_validation else ""))]
    first = next((cases[0] for cases in experiment.groups.values() if cases), None)
    if first is not None and Path(first.images[0]).exists():
        header = read_header(first.images[0])
        spacing = " × ".join(f"{s:.3g}" for s in voxel_spacing(header.affine))
        shape = " × ".join(map(str, header.shape[:3]))
        facts += [("channels", image_channels(first.images)), ("grid", f"{shape} voxels of {spacing} mm ({first.id})")]
    settings = experiment.dataset.settings
    if settings is not None and settings.spacing:
        facts.append(("resampled to", " × ".join(f"{s:g}" for s in settings.spacing) + " mm"))
    return facts


def training_text(model, experiment):
    """``24 epochs; best epoch 20 (val_dice_mean 0.9512)`` of one model's log."""
    epochs = int(model.log["epoch"].max()) if len(model.log) else 0
    if experiment is None or not len(model.log):
        return f"{epochs} epochs"
    column, best = best_epoch(model.log, experiment.training)
    return f"{epochs} epochs; best epoch {int(best['epoch'])} ({column} {float(best[column]):.4f})"


def versions():
    """The versions of what wrote the report."""
    import monai
    import torch

    from unet3d import __version__

    return f"unet3d {__version__}, torch {torch.__version__}, MONAI {monai.__version__}, Python {platform.python_version()}"


def plan(inputs):
    """The planner's reasons (``<config name>_plan.md`` beside the config), as written, or None."""
    folder = inputs.folder
    candidates = [folder.parent / f"{folder.name}_plan.md", folder.parent.parent / f"{folder.parent.name}_plan.md"]
    if inputs.experiment is not None:
        filename = Path(inputs.experiment.filename)
        candidates.insert(0, filename.with_name(f"{filename.stem}_plan.md"))
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        return None
    text = f"<details><summary>{page.escape(found.name)}</summary><pre>{page.escape(found.read_text())}</pre></details>"
    return "plan", "plan", page.section("How the config was planned", text, "plan")


def curves(inputs):
    """Learning curves of the run's models, or None without any."""
    models = [model for model in inputs.models if len(model.log)]
    if not models:
        return None
    body = page.image(charts.learning_curves(models), "learning curves")
    return "learning curves", "curves", page.section("Learning curves", body, "curves")


def folds(inputs):
    """The cross-validation summary (``cv_summary.csv``) with its mean ± std row, or None."""
    summary = inputs.cv_summary
    if summary is None:
        return None
    rows = [[row["fold"], *[page.number(row[c], 0 if c in COUNTS else 4) for c in summary.columns[1:]]]
            for _, row in summary.iterrows() if row["fold"] not in ("mean", "std")]
    stats = summary.set_index("fold")
    if {"mean", "std"} <= set(stats.index):
        rows.append(["mean ± std", *[plus_minus(stats.loc["mean", c], stats.loc["std", c]) for c in summary.columns[1:]]])
    body = page.table(summary.columns, rows)
    return "folds", "folds", page.section("Cross-validation folds (cv_summary.csv)", body, "folds")


def plus_minus(mean, std):
    """A cell ``mean ± std``, or empty where the column has no mean."""
    if mean is None or np.isnan(float(mean)):
        return page.number(None)
    return f'<td class="n">{float(mean):.4f} ± {float(std):.4f}</td>'
