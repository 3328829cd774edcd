"""Write synthetic BraTS-layout cases (4 modalities + seg) for trying unet3d without real data."""

import argparse

from unet3d.data.synthetic import write_synthetic_brats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True, help="folder to write <case id>/ folders into")
    parser.add_argument("--n_cases", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 48, 48), metavar=("X", "Y", "Z"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default="BraTS20_Training", help="case ids are <prefix>_001, ...")
    parser.add_argument("--no_label", action="store_true", help="write images only (like BraTS validation data)")
    args = parser.parse_args()
    folders = write_synthetic_brats(args.output_dir, args.n_cases, tuple(args.shape), args.seed,
                                    args.prefix, with_label=not args.no_label)
    print(f"wrote {len(folders)} cases to {args.output_dir}")


if __name__ == "__main__":
    main()
