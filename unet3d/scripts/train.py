"""unet3d-train: train the model a JSON config describes (every cross-validation fold) and predict."""

from unet3d.scripts import cli


def build_parser():
    """The unet3d-train command line."""
    parser = cli.parser("unet3d-train", __doc__.split(": ", 1)[1])
    parser.add_argument("--config_filename", required=True, help="the JSON config")
    parser.add_argument("--output_dir", help="where to write <config name>/ (default: the config's folder)")
    parser.add_argument("--setup_crossval_only", action="store_true",
                        help="write the fold<k>.json configs and stop, to train each fold as its own job")
    parser.add_argument("--restart", action="store_true",
                        help="train from scratch, overwriting the checkpoint and log of an earlier run of this config")
    parser.add_argument("--fold", type=int, help="train only fold K (1-based) of a cross-validation config")
    parser.add_argument("--summarize", action="store_true",
                        help="write and print cv_summary.csv from the folds trained so far, and stop")
    slurm = parser.add_argument_group("SLURM job array written by --setup_crossval_only (submit_folds.sh)")
    slurm.add_argument("--slurm_account", help="#SBATCH --account")
    slurm.add_argument("--slurm_time", help="#SBATCH --time, e.g. 2-00:00:00")
    slurm.add_argument("--slurm_partition", help="#SBATCH --partition")
    slurm.add_argument("--slurm_gpus", type=int, help="#SBATCH --gres=gpu:N")
    slurm.add_argument("--slurm_cpus", type=int, help="#SBATCH --cpus-per-task")
    slurm.add_argument("--slurm_template", help="file whose lines (#SBATCH directives, module loads) go into the script")
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--nthreads", type=int, default=0, help="data loader worker processes (default 0: load in the main process)")
    parser.add_argument("--cache_dir", help="folder for preprocessed cases, shared by folds and reruns "
                        "(default: <output_dir>/<config name>/cache for a cross-validation config, else <output_dir>/cache)")
    parser.add_argument("--ngpus", type=int, default=1, help="accepted for compatibility with 3DUnetCNN; one GPU is used")
    return parser


def main(argv=None):
    """Entry point of unet3d-train."""
    cli.run("unet3d-train", build_parser(), _train, argv)


def _train(args):
    from unet3d.device import choose_device
    from unet3d.errors import UserError
    from unet3d.train.experiment import run_experiment

    if args.nthreads < 0:
        raise UserError(f"--nthreads must be 0 or more, got {args.nthreads}")
    slurm = {"template_filename": args.slurm_template, "account": args.slurm_account, "time": args.slurm_time,
             "partition": args.slurm_partition, "gpus": args.slurm_gpus, "cpus": args.slurm_cpus}
    device = choose_device(args.device)
    run_experiment(args.config_filename, args.output_dir, device, args.setup_crossval_only, args.nthreads,
                   args.cache_dir, fold=args.fold, restart=args.restart, summarize_only=args.summarize, slurm=slurm)


if __name__ == "__main__":
    main()
