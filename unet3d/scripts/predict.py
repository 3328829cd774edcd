"""unet3d-predict: apply trained models (one, or an ensemble of folds) to new scans."""

import sys

from unet3d.scripts import cli


def build_parser():
    """The unet3d-predict command line."""
    parser = cli.parser("unet3d-predict", __doc__.split(": ", 1)[1])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config_filename", help="the JSON config the model was trained with")
    what.add_argument("--selection", help="the selection.json of unet3d-train --select_best: predict with the chosen "
                                          "configuration's fold models, or with every configuration's for an ensemble "
                                          "(probabilities averaged on each scan's grid); instead of --config_filename "
                                          "and --model_filename")
    parser.add_argument("--model_filename", action="append",
                        help="model weights (model_best.pth); repeat it or use a quoted glob such as "
                             "'exp/fold*/model_best.pth' to average the probabilities of several models")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--group", help="predict the config's <group>_filenames, e.g. test")
    source.add_argument("--images", nargs="+", action="append", metavar="IMAGE",
                        help="one case's images, one per modality in training order; repeat for more cases")
    parser.add_argument("--ids", nargs="+", metavar="ID",
                        help="with --images: the output name of each case, in order (e.g. the config's ids, so that "
                             "the predictions can be evaluated against a config group); default: the files' common prefix")
    source.add_argument("--input_dir", help="a folder of BraTS cases: <id>/<id>_{flair,t1,t1ce,t2}.nii.gz (or .nrrd, "
                                            ".mha, .mhd, .nhdr, or a folder holding a DICOM series)")
    cli.add_output_dir_flag(parser, "folder for one <case id>.nii.gz per case, or .nrrd, .mha for such inputs",
                            required=True)
    parser.add_argument("--output_format", help="nifti, nrrd or mha: the format of every prediction (default: config "
                                                "'prediction.output_format', else the input's; NIfTI for DICOM)")
    parser.add_argument("--activation", help="sigmoid, softmax or none (default: config 'prediction.activation', "
                                              "else the label scheme's: sigmoid)")
    parser.add_argument("--threshold", type=float,
                        help="probability threshold for label maps (default: config 'prediction.threshold' or 0.5)")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="write float32 probability maps (X, Y, Z, channel) instead of labels")
    parser.add_argument("--min_component_size", type=int,
                        help="remove connected components under this many voxels, per region, instead of the "
                             "post-processing chosen by cross-validation (0: none; default: config "
                             "'prediction.min_component_size')")
    parser.add_argument("--keep_largest", action="store_true",
                        help="keep only the largest component of each region, instead of the post-processing "
                             "chosen by cross-validation")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--postprocessing", metavar="FILE",
                        help="apply this postprocessing.json (default: the one in the cross-validation run folder "
                             "holding the fold<k>/ folders of the models, if there is one)")
    chosen.add_argument("--no_postprocessing", action="store_true",
                        help="do not apply the post-processing chosen by cross-validation")
    parser.add_argument("--tta", action="store_true",
                        help="average over the 8 mirrorings of the spatial axes (also config prediction.tta)")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: config 'prediction.overlap' or 0.5)")
    parser.add_argument("--sw_batch_size", type=int,
                        help="windows per forward pass; lower it when memory runs out (default: config or 4)")
    parser.add_argument("--no_amp", action="store_true", help="no autocast: float32 (default: float16 on CUDA; bfloat16 on a CPU for models trained in bfloat16)")
    parser.add_argument("--overwrite", action="store_true", help="replace predictions that already exist")
    cli.add_device_flag(parser)
    cli.add_nthreads_flag(parser, "data loader worker processes (default 0: load in the main process)")
    parser.add_argument("--ngpus", type=int, default=1,
                        help="processes sharing the cases, one per GPU (with --device cpu: CPU processes; 0: one "
                             "process on the CPU, as in 3DUnetCNN); the outputs are those of one process. Under "
                             "torchrun: its processes (RANK, WORLD_SIZE)")
    cli.add_config_flags(parser, example="prediction.overlap=0.75")
    return parser


def main(argv=None):
    """Entry point of unet3d-predict."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cli.run("unet3d-predict", build_parser(), lambda args: _predict(args, argv), argv)


def _predict(args, argv):
    from unet3d.config.experiment import load_experiment
    from unet3d.config.resolve import load_plugins
    from unet3d.errors import UserError
    from unet3d.device import check_process_devices, choose_device

    cli.require_at_least(("--nthreads", args.nthreads, 0))
    ngpus, device_name = cli.processes_and_device(args.ngpus, args.device)
    load_plugins(args.plugin)
    if args.selection and _predict_selection(args):
        return
    if not args.model_filename:
        raise UserError("--config_filename needs --model_filename (or give --selection instead of both)")
    experiment = load_experiment(args.config_filename, args.allow_unknown_keys, args.overrides)
    from unet3d.predict.inference import check_outputs, predict  # imports MONAI (seconds): after the config's checks
    from unet3d import distributed

    prediction = experiment.prediction.override(**_prediction_changes(args))
    cases = dict(group=args.group, images=args.images, input_dir=args.input_dir, ids=args.ids)
    postprocessing = _postprocessing(args)
    context = distributed.from_environment()
    if ngpus > 1 and not context.enabled:
        # Mistakes surface here as one line, before torchrun starts the processes.
        check_process_devices(choose_device(device_name), ngpus)
        check_outputs(experiment, args.model_filename, args.output_dir, save_probabilities=args.save_probabilities,
                      overwrite=args.overwrite, postprocessing=postprocessing, **cases)
        sys.exit(distributed.launch(ngpus, distributed.strip_flag(argv, "--ngpus"), "unet3d.scripts.predict"))
    with distributed.process_group(context, choose_device(device_name)) as device:
        predict(experiment, args.model_filename, args.output_dir, device, prediction=prediction,
                save_probabilities=args.save_probabilities, keep_largest=args.keep_largest, tta=args.tta,
                amp=not args.no_amp, overwrite=args.overwrite, num_workers=args.nthreads,
                keep_config=bool(args.overrides), shard=(context.rank, context.world_size),
                postprocessing=postprocessing, **cases)


def _prediction_changes(args):
    """The prediction settings the command line changes (None: the config's)."""
    return dict(activation=args.activation, threshold=args.threshold, min_component_size=args.min_component_size,
                overlap=args.overlap, sw_batch_size=args.sw_batch_size, output_format=args.output_format)


def _predict_selection(args):
    """Predict with the ensemble a selection chose and return True; for one chosen configuration, set its config
    and fold models on ``args`` for the ordinary path and return False."""
    from unet3d.device import choose_device
    from unet3d.errors import UserError
    from unet3d.runs.selection import predict_selected, read_selection

    if args.model_filename:
        raise UserError("--selection names the models; leave out --model_filename")
    selection = read_selection(args.selection)
    runs = selection[0]
    if len(runs) == 1:
        args.config_filename, args.model_filename = runs[0][0], [str(path) for path in runs[0][1]]
        return False
    if args.ngpus > 1:
        raise UserError("--ngpus: an ensemble of configurations is predicted in one process")
    cases = dict(group=args.group, images=args.images, input_dir=args.input_dir, ids=args.ids)
    predict_selected(selection, args.output_dir, choose_device(args.device), _prediction_changes(args),
                     args.overrides, args.allow_unknown_keys, cases, _postprocessing(args),
                     save_probabilities=args.save_probabilities, keep_largest=args.keep_largest, tta=args.tta,
                     amp=not args.no_amp, overwrite=args.overwrite, num_workers=args.nthreads)
    return True


def _postprocessing(args):
    """``--postprocessing``'s file, None with ``--no_postprocessing``, else "auto" (the run's or the ensemble's)."""
    return None if args.no_postprocessing else args.postprocessing or "auto"

if __name__ == "__main__":
    main()
