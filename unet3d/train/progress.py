"""Progress while training: a bar over each epoch's batches, and ``progress.png`` beside the CSV."""

import logging
import sys
import time

from tqdm import tqdm

from unet3d.atomic import atomic_path

log = logging.getLogger("unet3d")


class BatchProgress:
    """A tqdm bar (batches, loss, ETA) on a terminal; elsewhere a log line every ``interval`` seconds."""

    def __init__(self, total, description, interval=60.0):
        self.total, self.description, self.interval = total, description, interval
        self.done = 0
        self.start = self.last_line = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True)

    def update(self, loss):
        """One more batch done, with its loss."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update()
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval and self.done < self.total:
            self.last_line = now
            eta = (now - self.start) / self.done * (self.total - self.done)
            log.info("%s: batch %d/%d loss=%.4f eta %.0fs", self.description, self.done, self.total, loss, eta)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.close()


def plot_progress(rows, path):
    """Draw losses, Dice per region, learning rate and epoch time against the epoch into ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]

    def column(name):
        return [row.get(name, float("nan")) for row in rows]

    figure = Figure(figsize=(10, 12))
    FigureCanvasAgg(figure)
    losses, times, rates = figure.subplots(3, 1, sharex=True)
    for name in ("loss", "val_loss"):
        if name in rows[-1]:
            losses.plot(epochs, column(name), label=name)
    losses.set_ylabel("loss")
    dice_names = [name for name in rows[-1] if name.startswith("val_dice_")]
    if dice_names:
        dice = losses.twinx()
        for name in dice_names:
            dice.plot(epochs, column(name), linestyle="--" if name != "val_dice_mean" else ":", label=name)
        dice.set_ylabel("Dice")
        dice.legend(loc="upper right")
    losses.legend(loc="upper left")
    for name in ("epoch_time", "data_time"):
        times.plot(epochs, column(name), label=name)
    times.set_ylabel("seconds")
    times.legend(loc="upper left")
    rates.plot(epochs, column("lr"), label="lr")
    rates.set_ylabel("learning rate")
    rates.set_xlabel("epoch")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
