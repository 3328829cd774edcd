"""Prediction time per BraTS-size case, against plain MONAI sliding-window inference.

Times, on one random 4 x 240 x 240 x 155 volume and a DynUNet like the demo's:

- plain: ``monai.inferers.sliding_window_inference`` (Gaussian blending) and a sigmoid;
- ours: ``unet3d.models.inferer.Inferer.probabilities``, the same inference as unet3d-predict and validation;
- ours with TTA (8 mirrorings), against 8 times the plain figure;
- the whole case through ``predict_cases``: load 4 NIfTI files, preprocess, infer,
  invert to the input grid, decode labels and write the prediction.

Not a test; run it by hand: ``.venv/bin/python benchmarks/predict_speed.py``.
"""

import argparse
import tempfile
import time
from pathlib import Path

import nibabel
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet

from unet3d.config.experiment import experiment_from_dict, make_case
from unet3d.config.labels import LabelScheme
from unet3d.models.inferer import Inferer
from unet3d.predict.inference import predict_cases

DEMO_MODEL = dict(spatial_dims=3, in_channels=4, out_channels=3, deep_supervision=False,
                  strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], filters=[8, 16, 32, 64],
                  kernel_size=[[3, 3, 3]] * 4, upsample_kernel_size=[[2, 2, 2]] * 3)


def fastest(functions, repeats):
    """The fastest of ``repeats`` calls of each function, in seconds; calls alternate so load on the machine hits all alike."""
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def main():
    """Print the timings and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    parser.add_argument("--window", type=int, nargs=3, default=[128, 128, 128])
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw_batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_tta", action="store_true", help="skip the TTA timing (8 times longer)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DynUNet(**DEMO_MODEL).to(device).eval()
    image = torch.rand(1, 4, *args.shape, device=device)
    window, overlap, batch = tuple(args.window), args.overlap, args.sw_batch_size
    print(f"volume 4x{'x'.join(map(str, args.shape))}, window {window}, overlap {overlap}, sw_batch_size {batch}, "
          f"{device}, {torch.get_num_threads()} threads")

    def plain():
        with torch.no_grad():
            return torch.sigmoid(sliding_window_inference(image, window, batch, model, overlap, mode="gaussian"))

    def ours(tta=False):
        inferer = Inferer(LabelScheme.brats(), window, overlap, batch, tta=tta)
        return inferer.probabilities([model], image)

    with torch.no_grad():
        model(image[..., : window[0], : window[1], : window[2]])  # warm up
    torch.testing.assert_close(ours(), plain())
    plain_s, ours_s = fastest([plain, ours], args.repeats)
    print(f"plain MONAI sliding window:   {plain_s:7.2f} s")
    print(f"unet3d Inferer.probabilities: {ours_s:7.2f} s   ratio {ours_s / plain_s:.3f}")
    if not args.no_tta:
        [tta_s] = fastest([lambda: ours(tta=True)], 1)
        print(f"unet3d with TTA (8 passes):   {tta_s:7.2f} s   ratio {tta_s / (8 * plain_s):.3f} to 8 x plain")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        volumes = image[0].cpu().numpy()
        files = []
        for index, modality in enumerate(("flair", "t1", "t1ce", "t2")):
            files.append(str(folder / f"case_{modality}.nii.gz"))
            nibabel.save(nibabel.Nifti1Image(volumes[index], np.eye(4)), files[-1])
        config = {"model": {"name": "DynUNet", **DEMO_MODEL}, "optimizer": {"name": "Adam"}, "loss": {"name": "DiceLoss"},
                  "dataset": {"name": "SegmentationDataset", "labels": [2, 1, 4], "setup_label_hierarchy": True,
                              "crop_foreground": True, "normalization": "NormalizeIntensityD",
                              "normalization_kwargs": {"channel_wise": True}},
                  "prediction": {"window": list(window), "overlap": overlap, "sw_batch_size": batch},
                  "training_filenames": [{"image": files}]}
        experiment = experiment_from_dict(config)
        case = [make_case({"id": "case", "image": files})]
        [whole_s] = fastest([lambda: predict_cases(experiment, model, case, folder / "out", device, overwrite=True)], 1)
    print(f"unet3d whole case (load, preprocess, infer, invert, write): {whole_s:7.2f} s   "
          f"ratio {whole_s / plain_s:.3f} to plain inference alone")


if __name__ == "__main__":
    main()
