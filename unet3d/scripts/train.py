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
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--nthreads", type=int, default=0, help="data loader worker processes (default 0: load in the main process)")
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
    device = choose_device(args.device)
    run_experiment(args.config_filename, args.output_dir, device, args.setup_crossval_only, args.nthreads, args.restart)


if __name__ == "__main__":
    main()
