"""Experiment trackers, optional and off by default: TensorBoard and MLflow get the figures of ``training_log.csv``.

The CSV stays the source of truth. Steps count optimizer steps (as in Lightning): the learning
rate is logged at every step as ``lr_step``, and an epoch's CSV columns at the epoch's last step.
An epoch reaches the trackers in one go, just before the checkpoint marks it done, so a resumed
run replays only an epoch they may already hold: TensorBoard purges it (``purge_step``) and
MLflow skips the steps its run has. The MLflow run id is kept in the checkpoint, so a resumed
run appends to the same run; a run with no trackers pays nothing for them.
"""

import functools
import importlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from unet3d.errors import Interrupted, UserError, install_hint

log = logging.getLogger("unet3d")
# Database stores (MLflow's default, SQLite, among them) need SQLAlchemy and Alembic besides the client.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# Colours of the first masks (labels, regions) of the overlay image, then repeated.
COLOURS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.5, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0]])
BATCH = 1000  # MLflow takes at most 1000 metrics and 100 params per request, and values of 6000 characters
PARAM_BATCH = 100
PARAM_LENGTH = 6000
HEALTH_TIMEOUT = 4  # seconds an MLflow server has to answer the pre-flight check
GATEWAY_ERRORS = (502, 503, 504)  # a proxy's answer for a server behind it that does not answer


def require_trackers(names, work_dir):
    """Raise a UserError when a tracker in ``names`` is not installed (naming the pip command) or cannot be reached
    (naming ``MLFLOW_TRACKING_URI``): pre-flight, in seconds, before MLflow's client retries for minutes."""
    for name in names or ():
        modules = ["tensorboard"] if name == "tensorboard" else ["mlflow"]
        if name == "mlflow" and is_database(tracking_uri(work_dir)):
            modules += ["sqlalchemy", "alembic"]
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError:
                raise UserError(f"training.trackers: {name} needs the {module} package: {install_hint(name)}") from None
        if name == "mlflow":
            require_mlflow_store(tracking_uri(work_dir))


def require_mlflow_store(uri, timeout=HEALTH_TIMEOUT):
    """Raise a UserError naming ``MLFLOW_TRACKING_URI`` when its server does not answer its health check within
    ``timeout`` seconds, or when it names a folder store, which MLflow refuses unless ``MLFLOW_ALLOW_FILE_STORE``."""
    scheme = uri.split("://")[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError as error:  # a server that answers, if not to this path (a login), is there
            if error.code not in GATEWAY_ERRORS:
                return
            reason = f"HTTP {error.code} {error.reason}"
        except (OSError, ValueError) as error:  # refused, unknown host, timed out, a malformed URL
            reason = getattr(error, "reason", None) or error
        raise UserError(f"MLFLOW_TRACKING_URI {uri}: the MLflow server does not answer ({reason}); start it "
                        "(mlflow server), or unset MLFLOW_TRACKING_URI to log to mlflow.db beside the run")
    elif scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        raise UserError(f"MLFLOW_TRACKING_URI {uri}: MLflow no longer writes folder stores (unless "
                        "MLFLOW_ALLOW_FILE_STORE=true); use a database such as sqlite:///<folder>/mlflow.db, or unset "
                        "MLFLOW_TRACKING_URI to log to mlflow.db beside the run")


def quiet_mlflow():
    """MLflow's, Alembic's and SQLAlchemy's INFO lines (database migrations, run links) off the console; warnings
    stay. MLflow sets up its logger as it is imported, so this follows the import."""
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def store_folder(work_dir):
    """The folder of the config a model belongs to (a fold's parent): where MLflow's default store lives."""
    work_dir = Path(work_dir).resolve()
    return work_dir.parent if re.fullmatch(r"fold\d+", work_dir.name) else work_dir


def tracking_uri(work_dir):
    """``MLFLOW_TRACKING_URI``, else an SQLite store ``mlflow.db`` in ``store_folder(work_dir)``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_folder(work_dir) / 'mlflow.db'}"


def is_database(uri):
    """Whether an MLflow tracking URI names a database store (``sqlite:///...``, ``postgresql+psycopg2://...``)."""
    return "://" in uri and uri.split("://")[0].split("+")[0] in DATABASE_SCHEMES


def mid_slice(image, predicted, reference):
    """The middle slice (last axis) of a case's first image channel and of its predicted and reference masks,
    on the CPU: what ``overlay`` draws."""
    middle = image.shape[-1] // 2
    return image[0, ..., middle].float().cpu(), predicted[..., middle].cpu(), reference[..., middle].cpu()


def overlay(example, alpha=0.5):
    """An RGB image (3, H, 2W) in [0, 1] from ``mid_slice``: the prediction's masks in colour over the slice, and
    beside it the reference's."""
    image, predicted, reference = example
    low, high = image.min(), image.max()
    grey = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    panels = []
    for masks in (predicted, reference):
        rgb = grey.expand(3, *grey.shape).clone()
        for index, mask in enumerate(masks.bool()):
            colour = COLOURS[index % len(COLOURS)].view(3, 1, 1)
            rgb = torch.where(mask, (1 - alpha) * rgb + alpha * colour, rgb)
        panels.append(rgb)
    return torch.cat(panels, dim=2)


def flat_params(experiment):
    """The config as MLflow parameters: dotted keys, JSON values; case lists as their counts."""
    params = {f"{group}_cases": len(cases) for group, cases in experiment.groups.items()}

    def walk(prefix, value):
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            params[prefix] = value if isinstance(value, str) else json.dumps(value)

    walk("", {k: v for k, v in experiment.source.items() if not k.endswith("_filenames")})
    return params


class Trackers:
    """The trackers ``training.trackers`` names, held by the main process only (elsewhere every call is a no-op).

    The loop calls ``start`` once the checkpoint is read, ``record_lr`` after each optimizer step,
    ``log_epoch`` when an epoch's row is complete, and uses the object as a context manager around
    its epochs (which ends the tracker runs). ``state_dict`` goes into the training checkpoint.
    """

    def __init__(self, experiment, work_dir, enabled=True):
        self.experiment, self.work_dir = experiment, Path(work_dir)
        self.names = list(dict.fromkeys(experiment.training.trackers or ())) if enabled else []
        self.interval = experiment.training.tracker_image_interval
        self.saved, self.open, self.lrs, self.steps_per_epoch = {}, [], [], 1

    def start(self, rows, steps_per_epoch):
        """Open each tracker after the epochs in ``rows`` (already trained), adding those it lacks."""
        self.steps_per_epoch = steps_per_epoch
        kinds = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}
        self.open = [kinds[name](self.experiment, self.work_dir, rows, steps_per_epoch, self.saved.get(name))
                     for name in self.names]

    def record_lr(self, lr):
        """The learning rate of one optimizer step, logged with the epoch's row."""
        if self.open:
            self.lrs.append(lr)

    def log_epoch(self, row, example=None):
        """One epoch's CSV row, its steps' learning rates and, every ``tracker_image_interval`` epochs, the overlay
        of ``example`` (``mid_slice`` of the validation pass; None when the epoch was not validated)."""
        if not self.open:
            return
        epoch, first = row["epoch"], (row["epoch"] - 1) * self.steps_per_epoch
        steps, self.lrs = list(enumerate(self.lrs, start=first + 1)), []
        image = overlay(example) if example is not None and epoch % self.interval == 0 else None
        for tracker in self.open:
            tracker.log_epoch(row, epoch * self.steps_per_epoch, steps, image)

    def state_dict(self):
        """What each tracker needs to continue its run on resume (MLflow's run id), for the checkpoint."""
        return {**self.saved, **{tracker.name: tracker.state() for tracker in self.open}}

    def load_state_dict(self, state):
        """The checkpoint's ``state_dict``, used by ``start``."""
        self.saved = dict(state)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        stopped = exc_type is not None and (issubclass(exc_type, Interrupted) or not issubclass(exc_type, Exception))
        status = "FINISHED" if exc_type is None else "KILLED" if stopped else "FAILED"
        best = self.work_dir / "model_best.pth"
        trackers, self.open = self.open, []
        for tracker in trackers:
            try:
                tracker.close(status, best if status == "FINISHED" and best.is_file() else None)
            except UserError as error:
                if exc_type is None:
                    raise
                log.warning("%s", error)  # the error that stopped training is the one to report


def numeric(row):
    """The CSV columns of ``row`` that hold numbers."""
    return {key: float(value) for key, value in row.items() if isinstance(value, (int, float))}


class TensorBoardTracker:
    """Event files in ``<work dir>/tensorboard``: the CSV columns, ``lr_step`` and ``validation_overlay``."""

    name = "tensorboard"

    def __init__(self, experiment, work_dir, rows, steps_per_epoch, saved=None):
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(work_dir) / "tensorboard"
        resumed = folder.is_dir() and any(folder.iterdir())
        # Events at or after the first step to (re)train are hidden: an epoch logged before a crash is replayed.
        self.writer = SummaryWriter(str(folder), purge_step=len(rows) * steps_per_epoch + 1 if resumed else None)
        if not resumed:  # trackers named only now: the CSV's earlier epochs
            for row in rows:
                self.log_epoch(row, row["epoch"] * steps_per_epoch)

    def log_epoch(self, row, step, lr_steps=(), image=None):
        """Scalars of one epoch (and its steps' learning rates, and an image) at optimizer step ``step``."""
        for key, value in numeric(row).items():
            self.writer.add_scalar(key, value, step)
        for lr_step, lr in lr_steps:
            self.writer.add_scalar("lr_step", lr, lr_step)
        if image is not None:
            self.writer.add_image("validation_overlay", image, step)
        self.writer.flush()

    def state(self):
        """Nothing: the log folder is the run."""
        return {}

    def close(self, status, best_model=None):
        """Flush and close the event file."""
        self.writer.close()


# Where MLflow's errors come from: its client, and the HTTP and database libraries under it.
MLFLOW_ERROR_MODULES = ("mlflow", "requests", "urllib3", "sqlalchemy", "alembic")


def mlflow_errors(method):
    """``method`` of an ``MLflowTracker`` with MLflow's errors (a server out of reach, a store it cannot open or
    write) as a UserError naming the tracker and its URI."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            if type(error).__module__.split(".")[0] not in MLFLOW_ERROR_MODULES:
                raise
            where = ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI")
                     else "the default store; set MLFLOW_TRACKING_URI for another")
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            raise UserError(f"training.trackers: mlflow at {self.uri} ({where}) failed: {type(error).__name__}: "
                            f"{reason}") from None
    return wrapper


class MLflowTracker:
    """One MLflow run per model (named after its folder; the experiment after the config, or
    ``MLFLOW_EXPERIMENT_NAME``): the config as parameters, the CSV columns and ``lr_step`` as metrics,
    ``model_best.pth`` as an artifact when training ends."""

    name = "mlflow"

    @mlflow_errors
    def __init__(self, experiment, work_dir, rows, steps_per_epoch, saved=None):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        quiet_mlflow()
        self.uri = uri = tracking_uri(work_dir)
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or store_folder(work_dir).name
        found = self.client.get_experiment_by_name(name)
        local = None if os.environ.get("MLFLOW_TRACKING_URI") else (store_folder(work_dir) / "mlartifacts").as_uri()
        experiment_id = found.experiment_id if found else self.client.create_experiment(name, local)
        self.run_id = None
        if saved and saved.get("run_id"):
            try:
                if self.client.get_run(saved["run_id"]).info.lifecycle_stage == "active":
                    self.run_id = saved["run_id"]
                    self.client.update_run(self.run_id, status="RUNNING")
            except MlflowException:
                log.warning("MLflow run %s is not in %s: starting a new run", saved["run_id"], uri)
        if self.run_id is None:
            run = self.client.create_run(experiment_id, run_name=Path(work_dir).name,
                                         tags={"unet3d.work_dir": str(Path(work_dir).resolve())})
            self.run_id = run.info.run_id
        log.info("MLflow run %s in %s", self.run_id, uri)
        self.log_params(flat_params(experiment))
        self.last_step = max((metric.step for metric in self.client.get_metric_history(self.run_id, "loss")), default=0)
        for row in rows:  # epochs the run lacks (trackers named only now, another store)
            self.log_epoch(row, row["epoch"] * steps_per_epoch)

    @mlflow_errors
    def log_params(self, params):
        """Log the parameters the run lacks; one that changed since (``training.n_epochs``) keeps its first value."""
        from mlflow.entities import Param

        params = {key: str(value)[:PARAM_LENGTH] for key, value in params.items()}
        logged = self.client.get_run(self.run_id).data.params
        changed = [key for key, value in params.items() if key in logged and logged[key] != value]
        if changed:
            log.info("MLflow keeps the first value of the parameters %s", ", ".join(changed))
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        for start in range(0, len(new), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=new[start: start + PARAM_BATCH])

    @mlflow_errors
    def log_epoch(self, row, step, lr_steps=(), image=None):
        """Metrics of one epoch at optimizer step ``step``, unless the run has them already."""
        from mlflow.entities import Metric

        if step <= self.last_step:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in numeric(row).items()]
        metrics += [Metric("lr_step", lr, now, lr_step) for lr_step, lr in lr_steps]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start: start + BATCH])
        self.last_step = step

    def state(self):
        """The run's id, so that a resumed run appends to it."""
        return {"run_id": self.run_id}

    @mlflow_errors
    def close(self, status, best_model=None):
        """Upload ``best_model`` (when given) and end the run with ``status`` (FINISHED, KILLED, FAILED)."""
        if best_model is not None:
            self.client.log_artifact(self.run_id, str(best_model))
        self.client.set_terminated(self.run_id, status)
