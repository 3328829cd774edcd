"""``plan.md``: each choice of a plan with its reason, and the fingerprint's numbers behind them."""


def plan_markdown(plan, fingerprint, config_name):
    """The plan's explanation as Markdown."""
    cost = plan.cost
    lines = [f"# Plan for `{config_name}`", "",
             f"Planned for {cost['device']} ({cost['memory_gb']:.3g} GiB for a step"
             + ("" if cost["device_present"] else ", not on the machine that planned")
             + f") and a budget of {cost['budget_minutes']:.4g} minutes for the whole `unet3d-train` run "
             f"(all folds, validation and the predictions after them); estimated: {plan.estimate_minutes:.1f} "
             "minutes. Every value below is an ordinary config key: edit the config to change it. The spacing, "
             "patch, network, batch and folds follow from the fingerprint, the memory and the speed table alone; "
             "the length from the step's seconds (the `step` row).", "",
             "| choice | value | why |", "|---|---|---|"]
    lines += [f"| {topic} | {choice} | {reason} |" for topic, choice, reason in plan.reasons]
    lines += ["", "## Fingerprint", "",
              f"{fingerprint['n_cases']} labelled cases ({fingerprint['layout']} layout), "
              f"{fingerprint['n_test_cases']} test cases; read in {fingerprint['read_seconds']['total']} s with "
              f"{fingerprint['read_seconds']['workers']} processes.", "",
              f"- median spacing: {_numbers(fingerprint['median_spacing'])} mm (RAS axes); anisotropy "
              f"{fingerprint['anisotropy']:.2f}",
              f"- median shape: {_numbers(fingerprint['median_shape'])} voxels; median non-zero box "
              f"{_numbers(fingerprint['median_nonzero_shape'])} ({fingerprint['nonzero_share']:.0%} of the volume)",
              f"- orientations: {', '.join(fingerprint['orientations'])}", "",
              "Intensities of the foreground (label > 0), from a sample of its voxels in every case, as nnU-Net's "
              "fingerprint; the last column is the whole images' minimum.", "",
              "| channel | min | 0.5% | median | 99.5% | max | mean | std | image min |",
              "|---|---|---|---|---|---|---|---|---|"]
    for channel in fingerprint["channels"]:
        values = [channel.get(key) for key in ("min", "percentile_0.5", "percentile_50", "percentile_99.5", "max",
                                               "mean", "std", "image_min")]
        lines.append(f"| {channel['name']} | " + " | ".join("" if v is None else f"{v:.4g}" for v in values) + " |")
    lines += ["", "| label | cases with it | share | median volume (ml) | smallest (ml) |", "|---|---|---|---|---|"]
    for value, stats in fingerprint["label_stats"].items():
        lines.append(f"| {value} | {stats['cases_present']} | {stats['share_present']:.0%} | "
                     f"{stats['median_volume_mm3'] / 1000:.3g} | {stats.get('min_volume_mm3', 0) / 1000:.3g} |")
    return "\n".join(lines) + "\n"


def _numbers(values):
    return " x ".join(f"{v:.4g}" for v in values)
