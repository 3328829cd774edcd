"""unet3d-report: write report.html, one self-contained page with the worst cases first, in a run's folder and
each work folder below it (folds, evaluated predictions), or in one evaluated prediction folder."""

from unet3d.scripts import cli


def build_parser():
    """The unet3d-report command line."""
    parser = cli.parser("unet3d-report", __doc__.split(": ", 1)[1])
    parser.add_argument("work_dir", metavar="WORK_DIR",
                        help="a run's folder (as unet3d-train writes it), a fold's, or a prediction folder holding "
                             "evaluation.csv")
    parser.add_argument("--cases", nargs="+", default=[], metavar="ID", help="also draw these cases")
    parser.add_argument("--channel", type=int, default=0,
                        help="the image channel drawn under the contours (default 0: the first modality)")
    parser.add_argument("--pictures", type=int, default=20,
                        help="draw the N worst cases of each prediction group (default 20)")
    references = parser.add_argument_group(
        "the references of a prediction folder evaluated outside a run, as unet3d-evaluate took them")
    references.add_argument("--config_filename", help="a config: its labels, and with --group its cases' files")
    references.add_argument("--group", help="the config's <group>_filenames the predictions were evaluated against")
    references.add_argument("--label_dir", help="the folder of reference label maps")
    references.add_argument("--labels", type=int, nargs="+", help="label values (default: the config's)")
    references.add_argument("--label_mode", choices=("regions", "labels", "classes"), help="with --labels")
    references.add_argument("--label_names", nargs="+", help="with --labels: a name per label")
    return parser


def main(argv=None):
    """Entry point of unet3d-report."""
    cli.run("unet3d-report", build_parser(), _report, argv)


def _report(args):
    from unet3d.config.experiment import load_experiment
    from unet3d.evaluate.evaluation import evaluation_inputs
    from unet3d.report import ReportOptions, write_reports
    from unet3d.report.folders import group_images

    cli.require_at_least(("--channel", args.channel, 0), ("--pictures", args.pictures, 0))
    options = ReportOptions(cases=tuple(args.cases), channel=args.channel, pictures=args.pictures)
    references = scheme = images = experiment = None
    if any(cli.given(args, flag) for flag in ("--config_filename", "--group", "--label_dir", "--labels")):
        experiment = load_experiment(args.config_filename) if args.config_filename else None
        references, scheme = evaluation_inputs(experiment, args.group, args.label_dir, args.labels, args.label_mode,
                                               args.label_names)
        images = group_images(experiment, args.group)
    for path in write_reports(args.work_dir, options, references, scheme, images, experiment):
        print(path)


if __name__ == "__main__":
    main()
