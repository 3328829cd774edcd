"""Write realistic synthetic BraTS-layout cases (4 modalities + seg), made from the MNI brain template in nilearn."""

import argparse
import sys
import time

from unet3d.data.realistic import write_realistic_brats
from unet3d.data.synthetic import brats_shape
from unet3d.errors import UserError


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True, help="folder to write <case id>/ folders into")
    parser.add_argument("--n_cases", type=int, default=12)
    parser.add_argument("--spacing", type=float, default=2.0,
                        help="voxel size in mm; the volumes cover BraTS's 240 x 240 x 155 mm "
                             "(default 2: 120 x 120 x 78 voxels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default="BraTS20_Training", help="case ids are <prefix>_001, ...")
    parser.add_argument("--no_label", action="store_true", help="write images only (like BraTS validation data)")
    args = parser.parse_args()
    if args.n_cases < 0 or args.spacing <= 0:
        parser.error("--n_cases must be at least 0 and --spacing above 0")
    start = time.perf_counter()
    try:
        folders = write_realistic_brats(args.output_dir, args.n_cases, args.spacing, args.seed, args.prefix,
                                        with_label=not args.no_label)
    except UserError as error:
        print(f"make_realistic_data.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    shape = brats_shape(args.spacing)
    print(f"wrote {len(folders)} cases of {shape[0]} x {shape[1]} x {shape[2]} voxels at {args.spacing:g} mm "
          f"to {args.output_dir} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
