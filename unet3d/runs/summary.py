"""The cross-validation summary: each fold's best epoch and its validation figures."""

import math

import pandas as pd

from unet3d.train.log import best_epoch


def evaluation_means(path):
    """``{"eval_dice_WT": ..., "eval_hd95_WT": ...}``: the mean per region of a fold's evaluated
    validation predictions (in the input scans' space), or nothing before they exist."""
    if not path.is_file():
        return {}
    means = pd.read_csv(path).groupby("region", sort=False)[["dice", "hd95"]].mean()
    return {f"eval_{metric}_{region}": float(means.loc[region, metric])
            for metric in ("dice", "hd95") for region in means.index}


def summarize_folds(fold_dirs, settings):
    """One row per finished fold (best epoch, monitored value, validation Dice), then mean and std.

    ``settings`` are the experiment's ``TrainingSettings``.
    Returns ``None`` when no fold has a training log yet.
    """
    rows = []
    for fold_dir in fold_dirs:
        path = fold_dir / "training_log.csv"
        if not path.is_file():
            continue
        log = pd.read_csv(path)
        column, best = best_epoch(log, settings)
        row = {"fold": fold_dir.name, "epochs": int(log["epoch"].max()), "best_epoch": int(best["epoch"]),
               f"best_{column}": float(best[column])}
        row.update({c: float(best[c]) for c in log.columns if c.startswith("val_dice_")})
        row.update(evaluation_means(fold_dir / "predictions" / "validation" / "evaluation.csv"))
        rows.append(row)
    if not rows:
        return None
    table = pd.DataFrame(rows)
    numeric = table.drop(columns=["fold", "epochs", "best_epoch"])
    stats = pd.DataFrame([{"fold": "mean", **numeric.mean().to_dict()},
                          {"fold": "std", **numeric.std(ddof=0).to_dict()}])
    return pd.concat([table, stats], ignore_index=True)


def format_summary(table):
    """The summary as an aligned text table, with mean ± std per column."""
    folds = table[~table["fold"].isin(["mean", "std"])]
    mean, std = table.set_index("fold").loc["mean"], table.set_index("fold").loc["std"]
    shown = folds.copy()
    for column in folds.columns:
        if column in ("fold", "epochs", "best_epoch"):
            continue
        shown[column] = folds[column].map(lambda v: f"{v:.4f}")
    footer = {c: (f"{mean[c]:.4f} ± {std[c]:.4f}" if c in mean and not math.isnan(mean[c]) else "")
              for c in folds.columns if c != "fold"}
    shown = pd.concat([shown, pd.DataFrame([{"fold": "mean ± std", **footer}])], ignore_index=True)
    return shown.to_string(index=False)
