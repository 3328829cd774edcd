"""unet3d-train: train the model a JSON config describes (every cross-validation fold) and predict.

``--select_best A.json B.json`` chooses between configurations trained with cross-validation (a 3d and a 2d
one, say) and their ensemble. It lives here, beside ``--summarize``, because it reads what this command wrote
(each config's work folder, found from its name and ``--output_dir`` as training found it) and runs the folds'
models on their validation cases as training's predictions do; ``unet3d-predict --selection`` then uses the
choice.
"""

import json
import sys

from unet3d.scripts import cli

CONFLICTS = {
    ("--setup_crossval_only", "--fold"): "the first only writes the fold configs, the second trains one fold",
    ("--setup_crossval_only", "--summarize"): "neither trains; run them one after the other",
    ("--setup_crossval_only", "--restart"): "--setup_crossval_only trains nothing to restart",
    ("--summarize", "--restart"): "--summarize only reads what is trained; --restart would train again",
    ("--summarize", "--fold"): "--summarize reports every fold trained so far",
    ("--check", "--setup_crossval_only"): "--check writes nothing",
    ("--check", "--summarize"): "--check validates a config, --summarize reports a trained one",
    ("--check", "--restart"): "--check trains nothing to restart",
    ("--check", "--fold"): "--check checks every fold",
    ("--check", "--n_examples"): "--check writes nothing",
    ("--summarize", "--n_examples"): "--summarize only reads what is trained",
}
SLURM_FLAGS = ("--slurm_account", "--slurm_time", "--slurm_partition", "--slurm_gpus", "--slurm_cpus", "--slurm_template")


def build_parser():
    """The unet3d-train command line."""
    parser = cli.parser("unet3d-train", __doc__.split(": ", 1)[1].split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config_filename", help="the JSON config")
    what.add_argument("--select_best", nargs="+", metavar="CONFIG",
                      help="compare configs trained with cross-validation on the same folds, and their ensemble, by "
                           "mean out-of-fold Dice; write selection.json (for unet3d-predict --selection), "
                           "selection.md and selection.csv")
    parser.add_argument("--output_filename", help="with --select_best: the selection to write (default: "
                                                  "selection.json in --output_dir, else the first config's folder)")
    cli.add_output_dir_flag(parser, "where to write <config name>/ (default: the config's folder)")
    parser.add_argument("--setup_crossval_only", action="store_true",
                        help="write the fold<k>.json configs and stop, to train each fold as its own job")
    parser.add_argument("--restart", action="store_true",
                        help="train from scratch, overwriting the checkpoint and log of an earlier run of this config")
    parser.add_argument("--fold", type=int, help="train only fold K (1-based) of a cross-validation config")
    parser.add_argument("--summarize", action="store_true",
                        help="write and print cv_summary.csv from the folds trained so far, and stop")
    parser.add_argument("--check", action="store_true",
                        help="check the config and its data, print the resolved settings (defaults filled in) and stop")
    cli.add_config_flags(parser, example="training.n_epochs=40 or --set 'loss={\"name\": \"DiceLoss\", \"sigmoid\": "
                                         "true}'")
    slurm = parser.add_argument_group("SLURM job array written by --setup_crossval_only (submit_folds.sh)")
    slurm.add_argument("--slurm_account", help="#SBATCH --account")
    slurm.add_argument("--slurm_time", help="#SBATCH --time, e.g. 2-00:00:00")
    slurm.add_argument("--slurm_partition", help="#SBATCH --partition")
    slurm.add_argument("--slurm_gpus", type=int, help="#SBATCH --gres=gpu:N")
    slurm.add_argument("--slurm_cpus", type=int, help="#SBATCH --cpus-per-task")
    slurm.add_argument("--slurm_template", help="file whose lines (#SBATCH directives, module loads) go into the script")
    cli.add_device_flag(parser)
    cli.add_nthreads_flag(parser, "data loader worker processes (default 0: load in the main process)")
    parser.add_argument("--cache_dir", help="folder for preprocessed cases, shared by folds and reruns "
                        "(default: <output_dir>/<config name>/cache for a cross-validation config, else <output_dir>/cache)")
    parser.add_argument("--trackers", nargs="*", metavar="NAME",
                        help="log to these experiment trackers too: tensorboard, mlflow (overrides training.trackers; "
                             "none after the flag: no tracker)")
    parser.add_argument("--ngpus", type=int, default=1,
                        help="train one model data-parallel in N processes on this node (torchrun; one per GPU, "
                             "or Gloo processes with --device cpu; 0: one process on the CPU, as in 3DUnetCNN)")
    original = parser.add_argument_group("3DUnetCNN's flags")
    original.add_argument("--pretrained_model_filename",
                          help="start a fresh run from these weights: parameters whose names and shapes match are "
                               "loaded, the others keep their initialisation (as training.pretrained). Not used when "
                               "the run resumes from its checkpoint")
    original.add_argument("--training_log_filename", help="also write the training log CSV here")
    original.add_argument("--batch_size", type=int, help="override training.batch_size")
    original.add_argument("--machine_config_filename",
                          help="JSON with n_workers, n_gpus and pin_memory; replaces --nthreads and --ngpus")
    original.add_argument("--n_examples", type=int,
                          help="first write N training inputs and targets as the network sees them (preprocessed, "
                               "patched, augmented) to <work folder>/data_loader_testing/")
    return parser


def main(argv=None):
    """Entry point of unet3d-train."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cli.run("unet3d-train", build_parser(), lambda args: _select(args) if args.select_best else _train(args, argv),
            argv)


def _train(args, argv):
    import logging
    import os

    from unet3d.config.experiment import load_experiment
    from unet3d.config.resolve import load_plugins
    from unet3d.config.settings import TRACKERS
    from unet3d.device import check_process_devices, choose_device
    from unet3d.errors import UserError

    _check_flags(args)
    load_plugins(args.plugin)
    machine, nthreads, ngpus, device_name = _machine(args)
    overrides = list(args.overrides)
    if args.batch_size is not None:
        logging.getLogger("unet3d").warning("--batch_size %d overrides training.batch_size", args.batch_size)
        overrides.append(f"training.batch_size={args.batch_size}")
    if args.trackers is not None:
        for name in args.trackers:
            if name not in TRACKERS:
                raise UserError(f"--trackers {name}: expected " + " or ".join(TRACKERS))
        overrides.append(f"training.trackers={json.dumps(args.trackers)}")
    if args.pretrained_model_filename:
        overrides.append(f"training.pretrained={json.dumps(os.path.abspath(args.pretrained_model_filename))}")
    experiment = load_experiment(args.config_filename, args.allow_unknown_keys, overrides)
    # Imported once the config has been read: they import MONAI (seconds), and a mistake in the config or a
    # flag is reported without waiting for it.
    from unet3d.runs import workflow
    from unet3d import distributed

    work_dir = workflow.work_dir_for(args.config_filename, args.output_dir)
    if args.summarize:
        workflow.summarize_cross_validation(experiment, work_dir)
        return
    if args.setup_crossval_only:
        slurm = {"template_filename": args.slurm_template, "account": args.slurm_account, "time": args.slurm_time,
                 "partition": args.slurm_partition, "gpus": args.slurm_gpus, "cpus": args.slurm_cpus}
        print(f"sbatch {workflow.setup_cross_validation(experiment, work_dir, slurm)}")
        return
    if args.check:
        workflow.check_experiment(experiment, work_dir, args.cache_dir or workflow.default_cache_dir(experiment, work_dir),
                                  choose_device(device_name), args.training_log_filename)
        print(json.dumps(workflow.resolved_settings(experiment), indent=2, default=str))
        return
    context = distributed.from_environment()
    if ngpus > 1 and not context.enabled:
        # Mistakes surface here as one line, before torchrun starts the processes.
        check_process_devices(choose_device(device_name), ngpus)
        workflow.check_experiment(experiment, work_dir, log_copy=args.training_log_filename)
        sys.exit(distributed.launch(ngpus, distributed.strip_flag(argv, "--ngpus"), "unet3d.scripts.train"))
    options = workflow.RunOptions(
        num_workers=nthreads, pin_memory=machine.get("pin_memory"), cache_dir=args.cache_dir, restart=args.restart,
        n_examples=args.n_examples or 0, log_copy=args.training_log_filename, allow_unknown_keys=args.allow_unknown_keys)
    with distributed.process_group(context, choose_device(device_name)) as device:
        workflow.train_experiment(experiment, work_dir, device, context, args.fold, options)


def _check_flags(args):
    from unet3d.errors import UserError

    cli.refuse_together(args, CONFLICTS)
    for flag in SLURM_FLAGS:
        if cli.given(args, flag) and not args.setup_crossval_only:
            raise UserError(f"{flag} only applies to the job array that --setup_crossval_only writes")
    if args.output_filename:
        raise UserError("--output_filename names the selection that --select_best writes")


def _select(args):
    from unet3d.device import choose_device
    from unet3d.errors import UserError
    from unet3d.runs.selection import select_best

    for flag in ("--fold", "--setup_crossval_only", "--summarize", "--check", "--restart", "--n_examples",
                 "--pretrained_model_filename", "--batch_size", "--training_log_filename", *SLURM_FLAGS):
        if cli.given(args, flag):
            raise UserError(f"--select_best and {flag} cannot be used together: --select_best only reads trained runs")
    if args.overrides:
        raise UserError("--select_best reads the configs as they were trained; --set does not apply")
    select_best(args.select_best, args.output_filename, args.output_dir, choose_device(args.device), args.nthreads)


def _machine(args):
    """``(machine config, workers, processes, device name)``; 3DUnetCNN's machine config replaces --nthreads and
    --ngpus, and its ``n_gpus: 0`` (as ``--ngpus 0``) is one process on the CPU."""
    from unet3d.config.load import read_machine_config

    machine = read_machine_config(args.machine_config_filename) if args.machine_config_filename else {}
    nthreads = machine.get("n_workers", args.nthreads)
    cli.require_at_least(("--nthreads", nthreads, 0), ("--n_examples", args.n_examples, 0),
                         ("--batch_size", args.batch_size, 1))
    flag = f"{args.machine_config_filename}: n_gpus" if "n_gpus" in machine else "--ngpus"
    return (machine, nthreads, *cli.processes_and_device(machine.get("n_gpus", args.ngpus), args.device, flag))


if __name__ == "__main__":
    main()
