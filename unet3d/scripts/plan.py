"""unet3d-plan: read a dataset folder, fingerprint it and write a config that fits the data, device and time budget."""

from unet3d.scripts import cli


def build_parser():
    """The unet3d-plan command line."""
    parser = cli.parser("unet3d-plan", __doc__.split(": ", 1)[1])
    parser.add_argument("--input_dir", required=True,
                        help="an nnU-Net raw dataset, a Decathlon task, BraTS case folders, or images/ and labels/")
    parser.add_argument("--output_filename", required=True,
                        help="the config to write; <name>_plan.md and <name>_fingerprint.json go beside it")
    cli.add_device_flag(parser, help="the device training will use: auto (default), cpu or cuda; cuda plans for a "
                                     "GPU even on a machine without one (its speed from the speed table)")
    parser.add_argument("--gpu_memory_gb", type=float,
                        help="memory a training step may use (default: 85%% of the GPU's, 8 where no GPU is here; on "
                             "CPU, half the RAM)")
    parser.add_argument("--step_seconds", type=float,
                        help="seconds of one training step, instead of measuring it: replays a plan exactly (its "
                             "_plan.json's cost.step_seconds) or plans for a machine measured elsewhere")
    parser.add_argument("--budget_minutes", type=float, default=60.0,
                        help="minutes for the whole unet3d-train run: every fold and the predictions after (default 60)")
    cli.add_nthreads_flag(parser, "processes that read the cases (default: one per core)", default=None)
    parser.add_argument("--configurations", default="3d", choices=("3d", "2d", "all"),
                        help="3d (default); 2d: a network one slice deep, for thick slices; all: both where the slices "
                             "are thick (<name>_3d.json and <name>_2d.json), to train each and choose with "
                             "unet3d-train --select_best")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing config, plan and fingerprint")
    return parser


def main(argv=None):
    """Entry point of unet3d-plan."""
    cli.run("unet3d-plan", build_parser(), _plan, argv)


def _plan(args):
    from unet3d.plan.run import plan_dataset

    plan_dataset(args.input_dir, args.output_filename, device=args.device, gpu_memory_gb=args.gpu_memory_gb,
                 budget_minutes=args.budget_minutes, workers=args.nthreads, overwrite=args.overwrite,
                 step_seconds=args.step_seconds, configurations=args.configurations)


if __name__ == "__main__":
    main()
