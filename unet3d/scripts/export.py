"""unet3d-export: a trained model as TorchScript, ONNX and a MONAI bundle, with a manifest of its preprocessing."""

from pathlib import Path

from unet3d.scripts import cli

FORMATS = ("torchscript", "onnx", "bundle")


def build_parser():
    """The unet3d-export command line."""
    parser = cli.parser("unet3d-export", __doc__.split(": ", 1)[1])
    parser.add_argument("--config_filename", required=True, help="the JSON config the model was trained with")
    parser.add_argument("--model_filename", required=True, help="the weights to export (model_best.pth, ...)")
    cli.add_output_dir_flag(parser, "folder for model.ts, model.onnx, bundle/ and manifest.json (made if missing)",
                            required=True)
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                        help="what to write (default: all); the manifest is always written")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export")
    cli.add_config_flags(parser, example="'prediction.window=[96, 96, 96]'")
    return parser


def main(argv=None):
    """Entry point of unet3d-export."""
    cli.run("unet3d-export", build_parser(), _export, argv)


def _export(args):
    from unet3d.config.experiment import load_experiment
    from unet3d.config.resolve import load_plugins
    from unet3d.export import export_model

    load_plugins(args.plugin)
    experiment = load_experiment(args.config_filename, args.allow_unknown_keys, args.overrides)
    exported = export_model(experiment, args.model_filename, args.output_dir, args.formats, overwrite=args.overwrite)
    check = exported["check"]
    for name, details in exported["exports"].items():
        path = Path(args.output_dir) / (details.get("file") or details.get("folder"))
        if "max_abs_diff" in details:
            print(f"{name}: {path}, max abs difference from PyTorch {details['max_abs_diff']:.3g} "
                  f"(tolerance {check['tolerance']:g}, input {tuple(check['input_shape'])})")
        else:
            print(f"{name}: {path}")
    print(f"manifest: {Path(args.output_dir) / 'manifest.json'}")


if __name__ == "__main__":
    main()
