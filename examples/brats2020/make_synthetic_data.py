"""Write synthetic BraTS-layout cases (4 modalities + seg) for trying unet3d without real data."""

import argparse

from unet3d.data.synthetic import brats_shape, write_synthetic_brats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True, help="folder to write <case id>/ folders into")
    parser.add_argument("--n_cases", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="volume shape in voxels (default: 48 48 48, or BraTS's field of view with --spacing)")
    parser.add_argument("--spacing", type=float,
                        help="voxel size in mm; without --shape the volumes cover BraTS's 240 x 240 x 155 mm "
                             "(--spacing 2: 120 x 120 x 78 voxels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default="BraTS20_Training", help="case ids are <prefix>_001, ...")
    parser.add_argument("--no_label", action="store_true", help="write images only (like BraTS validation data)")
    args = parser.parse_args()
    spacing = args.spacing or 1.0
    shape = tuple(args.shape) if args.shape else brats_shape(spacing) if args.spacing else (48, 48, 48)
    folders = write_synthetic_brats(args.output_dir, args.n_cases, shape, args.seed, args.prefix,
                                    with_label=not args.no_label, spacing=(spacing,) * 3)
    print(f"wrote {len(folders)} cases of {shape[0]} x {shape[1]} x {shape[2]} voxels at {spacing:g} mm to {args.output_dir}")


if __name__ == "__main__":
    main()
