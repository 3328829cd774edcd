"""benchmarks/vs_nnunet_plan.py reads nnU-Net's plans in the image files' x, y, z order, whatever nnU-Net transposed."""


from helpers import REPO, load_module

benchmark = load_module(REPO / "benchmarks" / "vs_nnunet_plan.py")


def configuration(spacing, patch, kernels, strides):
    """One configuration of an nnUNetPlans.json, with the keys the benchmark reads."""
    return {"spacing": spacing, "patch_size": patch, "batch_size": 2,
            "normalization_schemes": ["ZScoreNormalization"] * 4, "use_mask_for_norm": [True] * 4,
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": {"n_stages": len(kernels), "features_per_stage": [32, 64, 128, 256, 320][
                                 :len(kernels)], "kernel_sizes": kernels, "strides": strides}}}


def test_anisotropic_plan_of_nnunet_reads_in_x_y_z_order():
    # nnU-Net 2.8.1's 3d_fullres plan of the anisotropic phantom (0.9 x 0.9 x 2.5 mm files): its axes are z, y, x.
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    plans = {"transpose_forward": [0, 1, 2], "configurations": {"3d_fullres": configuration(
        [2.5, 0.8999999761581421, 0.8999999761581421], [28, 96, 96], [[1, 3, 3]] + [[3, 3, 3]] * 4, strides)}}
    column = benchmark.nnunet_column(plans, "3d_fullres", 61.4)
    assert column["spacing (mm)"] == "0.9 x 0.9 x 2.5" and column["patch (voxels)"] == "96 x 96 x 28"
    assert column["kernels"] == "3x3x1, 3x3x3 (x4)"
    assert column["strides"] == "1x1x1, 2x2x1, 2x2x2 (x2), 2x2x1"
    assert column["network"] == "PlainConvUNet, 5 levels" and column["filters"] == "32, 64, 128, 256, 320"
    assert column["normalization"] == "ZScoreNormalization per channel, use_mask_for_norm True"


def test_transposed_plan_and_its_2d_configuration_read_in_x_y_z_order():
    # Thick first voxel axis (2.5 x 0.9 x 0.9 mm): nnU-Net's z, y, x arrays have it last and move it first.
    plans = {"transpose_forward": [2, 0, 1], "configurations": {
        "3d_fullres": configuration([2.5, 0.9, 0.8], [28, 96, 80], [[1, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2]]),
        "2d": configuration([0.9, 0.8], [96, 80], [[3, 3], [3, 3]], [[1, 1], [2, 2]])}}
    fullres = benchmark.nnunet_column(plans, "3d_fullres", 1.0)
    assert fullres["spacing (mm)"] == "2.5 x 0.8 x 0.9" and fullres["patch (voxels)"] == "28 x 80 x 96"
    assert fullres["kernels"] == "1x3x3, 3x3x3" and fullres["strides"] == "1x1x1, 1x2x2"
    flat = benchmark.nnunet_column(plans, "2d", 1.0)  # a slice of the thick axis: one voxel, its spacing kept
    assert flat["spacing (mm)"] == "- x 0.8 x 0.9" and flat["patch (voxels)"] == "1 x 80 x 96"
    assert flat["kernels"] == "1x3x3 (x2)" and flat["strides"] == "1x1x1, 1x2x2"
