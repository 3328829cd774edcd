"""The per-epoch training log, ``training_log.csv``."""

import csv
import io

from unet3d.atomic import write_text
from unet3d.config.settings import column_mode


class TrainingLog:
    """Rows of per-epoch figures, rewritten atomically as a CSV after every epoch (and to ``copy``, when given:
    3DUnetCNN's ``--training_log_filename``).

    The rows also live in the training checkpoint, so after a crash the CSV is rebuilt
    from the checkpoint and the two always agree.
    """

    def __init__(self, path, rows=(), copy=None):
        self.path, self.copy = path, copy
        self.rows = [dict(row) for row in rows]

    def append(self, row):
        """Add one epoch's row and rewrite the CSV."""
        self.rows.append(dict(row))
        self.write()

    def write(self):
        """Rewrite the CSV from the rows held in memory."""
        columns = []
        for row in self.rows:
            columns.extend(c for c in row if c not in columns)
        stream = io.StringIO()
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        for path in (self.path, self.copy):
            if path is not None:
                write_text(path, stream.getvalue())


def best_epoch(log, settings):
    """``(column, row)``: the row of ``log`` (a DataFrame) at the best value of ``settings.metric_to_monitor``, the
    earliest on ties; a log without that column is ranked by its training loss, minimized."""
    metric, mode = settings.metric_to_monitor, settings.monitor_mode
    column, mode = (metric, mode) if metric in log else ("loss", column_mode("loss"))
    values = log[column]
    return column, log.loc[values.idxmax() if mode == "max" else values.idxmin()]
