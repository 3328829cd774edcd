"""Build a unet3d config from BraTS folders, keeping the settings of a template config.

Example, for the BraTS 2020 download:

    python make_config.py --template brats2020_config.json \
        --training_dir MICCAI_BraTS2020_TrainingData \
        --group bratsvalidation=MICCAI_BraTS2020_ValidationData \
        --output my_brats2020_config.json
"""

import argparse

from unet3d.data.brats import write_brats_config
from unet3d.scripts import cli


def main():
    parser = cli.parser("make_config.py", __doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="config whose settings are kept")
    parser.add_argument("--training_dir", required=True, help="folder of labelled case folders")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=DIR",
                        help="an unlabelled group to predict, e.g. bratsvalidation=MICCAI_BraTS2020_ValidationData")
    parser.add_argument("--output", required=True, help="the config to write")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter

    def build(args):
        groups = []
        for item in args.group:
            name, sep, folder = item.partition("=")
            if not sep or not name.isidentifier():
                parser.error(f"--group {item!r}: expected NAME=DIR")
            groups.append((name, folder))
        config = write_brats_config(args.template, args.output, args.training_dir, groups)
        counts = ", ".join(f"{k}: {len(v)}" for k, v in config.items() if k.endswith("_filenames"))
        print(f"wrote {args.output} ({counts})")

    cli.run("make_config.py", parser, build)


if __name__ == "__main__":
    main()
