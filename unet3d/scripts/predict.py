"""unet3d-predict: apply a trained model to one filename group of a config."""

from unet3d.scripts import cli


def build_parser():
    """The unet3d-predict command line."""
    parser = cli.parser("unet3d-predict", __doc__.split(": ", 1)[1])
    parser.add_argument("--config_filename", required=True, help="the JSON config the model was trained with")
    parser.add_argument("--model_filename", required=True, help="model weights (model_best.pth, model.pth)")
    parser.add_argument("--group", required=True, help="which <group>_filenames of the config to predict, e.g. validation")
    parser.add_argument("--output_directory", required=True, help="folder for one <case id>.nii.gz per case")
    parser.add_argument("--activation", default="sigmoid", help="sigmoid (default), softmax or none")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold for label maps")
    parser.add_argument("--save_probabilities", action="store_true", help="write probability maps instead of labels")
    parser.add_argument("--overwrite", action="store_true", help="replace predictions that already exist")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--nthreads", type=int, default=0, help="data loader worker processes")
    return parser


def main(argv=None):
    """Entry point of unet3d-predict."""
    cli.run("unet3d-predict", build_parser(), _predict, argv)


def _predict(args):
    from unet3d.device import choose_device
    from unet3d.predict.inference import predict_group

    predict_group(args.config_filename, args.model_filename, args.group, args.output_directory,
                  choose_device(args.device), activation=args.activation,
                  save_probabilities=args.save_probabilities, threshold=args.threshold,
                  overwrite=args.overwrite, num_workers=args.nthreads)


if __name__ == "__main__":
    main()
