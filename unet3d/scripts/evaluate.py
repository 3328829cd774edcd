"""unet3d-evaluate: Dice, HD95, sensitivity, specificity and volumes of predicted label maps, per case and region."""

from unet3d.scripts import cli


def build_parser():
    """The unet3d-evaluate command line."""
    parser = cli.parser("unet3d-evaluate", __doc__.split(": ", 1)[1])
    parser.add_argument("--prediction_dir", required=True, help="folder of <case id>.nii.gz label maps (or .nrrd, .mha)")
    parser.add_argument("--config_filename", help="a config: its dataset labels, and with --group its reference labels")
    parser.add_argument("--group", help="the config's <group>_filenames whose 'label' files are the references")
    parser.add_argument("--label_dir", help="reference labels: <case id>.nii.gz files or BraTS <id>/<id>_seg.nii.gz")
    parser.add_argument("--labels", type=int, nargs="+",
                        help="label values (default: the config's dataset.labels, else every value in the references)")
    parser.add_argument("--label_mode", choices=("regions", "labels", "classes"),
                        help="with --labels: regions (nested, outermost first, e.g. BraTS 2 1 4), labels or classes "
                             "(each value on its own; the default)")
    parser.add_argument("--hierarchy", action="store_true", help="the same as --label_mode regions")
    parser.add_argument("--label_names", nargs="+", help="with --labels: a name per label, in the same order")
    parser.add_argument("--output_filename", help="per-case CSV (default <prediction_dir>/evaluation.csv); "
                                                  "the summary goes beside it as <name>_summary.csv")
    parser.add_argument("--no_hausdorff", action="store_true", help="skip the 95%% Hausdorff distance (the slow part)")
    parser.add_argument("--no_report", action="store_true",
                        help="write no report.html beside the CSV (the per-case page with pictures of the worst cases)")
    cli.add_config_flags(parser, example="'dataset.label_names=[\"a\", \"b\"]'")
    return parser


def main(argv=None):
    """Entry point of unet3d-evaluate."""
    cli.run("unet3d-evaluate", build_parser(), _evaluate, argv)


def _evaluate(args):
    from unet3d.config.experiment import load_experiment
    from unet3d.config.resolve import load_plugins
    from unet3d.errors import UserError

    if args.hierarchy and args.label_mode not in (None, "regions"):
        raise UserError(f"--hierarchy and --label_mode {args.label_mode} contradict each other; keep one")
    if (args.overrides or args.allow_unknown_keys) and not args.config_filename:
        flag = "--set" if args.overrides else "--allow_unknown_keys"
        raise UserError(f"{flag} changes how a config is read: give --config_filename")
    load_plugins(args.plugin)
    experiment = (load_experiment(args.config_filename, args.allow_unknown_keys, args.overrides)
                  if args.config_filename else None)
    # Imported once the config has been read: they import MONAI (seconds).
    from unet3d.evaluate.evaluation import evaluate_predictions, summary_table
    from unet3d.report import evaluation_report

    label_mode = "regions" if args.hierarchy else args.label_mode
    per_case, summary, references, scheme = evaluate_predictions(
        args.prediction_dir, experiment, args.group, args.label_dir, args.labels, label_mode, args.label_names,
        args.output_filename, not args.no_hausdorff)
    print(summary_table(summary))
    if not args.no_report:
        evaluation_report(args.prediction_dir, args.output_filename, per_case, references, scheme, experiment,
                          args.group)


if __name__ == "__main__":
    main()
