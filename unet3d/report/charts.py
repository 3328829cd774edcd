"""The report's charts, drawn with Matplotlib (as ``progress.png`` is) into PNG ``data:`` URIs: learning curves
and predicted against reference volumes."""

import base64
import io
import math

DPI = 80


def figure(width, height):
    """A Matplotlib figure on the Agg canvas, ``width`` by ``height`` inches (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    result = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(result)
    return result


def png_uri(drawn):
    """A drawn figure as a ``data:image/png;base64,...`` URI."""
    stream = io.BytesIO()
    drawn.savefig(stream, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode("ascii")


def learning_curves(models):
    """Losses, validation Dice per region and learning rate against the epoch, one line style per model
    (``TrainedModel``s, whose logs are DataFrames)."""
    drawn = figure(12, 3.2)
    # Fixed margins: Matplotlib's tight layout draws every figure twice.
    drawn.subplots_adjust(left=0.06, right=0.99, bottom=0.15, top=0.9, wspace=0.28)
    losses, dice, rates = drawn.subplots(1, 3)
    styles = ("-", "--", ":", "-.")
    for index, model in enumerate(models):
        log, style = model.log, styles[index % len(styles)]
        prefix = f"{model.name} " if len(models) > 1 else ""
        for colour, name in enumerate(("loss", "val_loss")):
            if name in log:
                rows = log[log[name].notna()]
                losses.plot(rows["epoch"], rows[name], style, color=f"C{colour}", label=prefix + name)
        regions = [c for c in log.columns if c.startswith("val_dice_") and c != "val_dice_mean"]
        for colour, name in enumerate(regions):
            rows = log[log[name].notna()]
            dice.plot(rows["epoch"], rows[name], style, color=f"C{colour}", label=prefix + name.removeprefix("val_dice_"))
        if "lr" in log:
            rates.plot(log["epoch"], log["lr"], style, color="C0", label=model.name)
    for axes, title in ((losses, "loss"), (dice, "validation Dice"), (rates, "learning rate")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        if axes.has_data():
            axes.legend(fontsize="small")
    return png_uri(drawn)


def volume_scatter(per_case, regions):
    """Predicted against reference volume (ml) per region, one panel each, with the line of equal volumes."""
    columns = min(len(regions), 4)
    drawn = figure(3.2 * columns, 3.2 * math.ceil(len(regions) / columns))
    drawn.subplots_adjust(left=0.2 / columns, right=0.98, bottom=0.15, top=0.9, wspace=0.45, hspace=0.45)
    axes_list = drawn.subplots(math.ceil(len(regions) / columns), columns, squeeze=False).ravel()
    for axes, region in zip(axes_list, regions):
        rows = per_case[per_case["region"] == region]
        reference, predicted = rows["reference_volume_ml"], rows["predicted_volume_ml"]
        top = max(float(reference.max()), float(predicted.max()), 1e-3) * 1.05
        axes.plot([0, top], [0, top], color="0.6", linewidth=1)
        axes.scatter(reference, predicted, s=14, color="C0")
        axes.set_xlim(0, top)
        axes.set_ylim(0, top)
        axes.set_title(region)
        axes.set_xlabel("reference volume (ml)")
        axes.set_ylabel("predicted volume (ml)")
    for axes in axes_list[len(regions):]:
        axes.set_visible(False)
    return png_uri(drawn)
