"""Fold splits, job-array set-up, single folds and the cross-validation summary."""

import subprocess

import pytest

from unet3d.config.experiment import make_case
from unet3d.config.settings import CrossValidationSettings
from unet3d.errors import UserError
from unet3d.runs.folds import split_folds

from helpers import edit_config, run


def cases(n, **keys):
    return [make_case({"image": [f"/d/case{i:02d}_t1.nii"], **{k: v(i) for k, v in keys.items()}}) for i in range(n)]


def test_folds_match_the_stored_split():
    # Stored once: a change here silently reshuffles every user's folds.
    assert split_folds(cases(10), 3, seed=25) == [[2, 3, 7, 9], [0, 5, 6], [1, 4, 8]]
    assert split_folds(cases(10), 2, seed=25) == [[3, 4, 5, 7, 8], [0, 1, 2, 6, 9]]
    assert split_folds(cases(10), 2, seed=26) != split_folds(cases(10), 2, seed=25)


def test_cases_of_one_subject_stay_in_one_fold():
    entries = cases(12, subject=lambda i: f"sub{i // 3}")
    folds = split_folds(entries, 2, seed=1, group_by="subject")
    for fold in folds:
        subjects = {entries[i].metadata["subject"] for i in fold}
        others = {entries[i].metadata["subject"] for other in folds if other is not fold for i in other}
        assert not subjects & others
    assert sorted(i for fold in folds for i in fold) == list(range(12))


def test_strata_spread_evenly_over_folds():
    entries = cases(12, grade=lambda i: "HGG" if i < 8 else "LGG")
    folds = split_folds(entries, 4, seed=7, stratify_by="grade")
    assert [sum(entries[i].metadata["grade"] == "LGG" for i in fold) for fold in folds] == [1, 1, 1, 1]
    assert [len(fold) for fold in folds] == [3, 3, 3, 3]


def test_original_spellings_are_accepted_and_mistakes_named():
    settings = CrossValidationSettings.parse({"folds": 5, "seed": 3}, "cross_validation")
    assert settings.n_folds == 5 and settings.random_seed == 3
    with pytest.raises(UserError, match="both 'folds' and 'n_folds'"):
        CrossValidationSettings.parse({"folds": 5, "n_folds": 5}, "cross_validation")
    with pytest.raises(UserError, match="'cross_validation.n_fold' is not known"):
        CrossValidationSettings.parse({"n_fold": 5}, "cross_validation")
    with pytest.raises(UserError, match="has no 'subject'"):
        split_folds(cases(4), 2, seed=0, group_by="subject")


def test_setup_crossval_only_writes_a_slurm_array(tiny_config, tmp_path):
    template = tmp_path / "header.sh"
    template.write_text("#!/bin/bash -l\n#SBATCH --mem=32G\nmodule load cuda\n")
    result = run("unet3d-train", "--config_filename", tiny_config, "--setup_crossval_only", "--slurm_account", "lab",
                 "--slurm_time", "1-00:00:00", "--slurm_gpus", "1", "--slurm_template", template)
    work = tiny_config.parent / "tiny"
    script = work / "submit_folds.sh"
    assert result.stdout.strip() == f"sbatch {script}"
    text = script.read_text()
    assert text.startswith("#!/bin/bash -l\n")
    for line in ("#SBATCH --array=1-2", "#SBATCH --account=lab", "#SBATCH --time=1-00:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --mem=32G", "module load cuda", f"cd {work}"):
        assert line in text.splitlines(), line
    assert text.rstrip().endswith("unet3d-train --config_filename fold${SLURM_ARRAY_TASK_ID}.json")
    assert text.index("#SBATCH --mem=32G") < text.index("module load cuda") < text.index("set -euo pipefail")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_single_fold_then_summary(tiny_config):
    edit_config(tiny_config, lambda c: c["training"].update(n_epochs=1))
    run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu", "--fold", "2")
    work = tiny_config.parent / "tiny"
    assert (work / "fold2" / "training_log.csv").is_file() and not (work / "fold1").exists()
    assert not (work / "cv_summary.csv").exists()
    # A fold's job writes its own report, not the run's: the run keeps no config.json; unet3d-report writes the
    # run's from the folds' configs.
    assert (work / "fold2" / "report.html").is_file() and not (work / "report.html").exists()
    assert run("unet3d-report", work).stdout.split()[0] == str(work / "report.html")
    assert "validation of 1 fold(s) (3 cases evaluated)" in (work / "report.html").read_text(encoding="utf-8")
    summary = run("unet3d-train", "--config_filename", tiny_config, "--summarize")
    assert "fold2" in summary.stdout and "mean ± std" in summary.stdout
    text = (work / "cv_summary.csv").read_text().splitlines()
    assert text[0].startswith("fold,epochs,best_epoch,best_val_loss,val_dice_WT")
    assert [line.split(",")[0] for line in text[1:]] == ["fold2", "mean", "std"]
    refused = run("unet3d-train", "--config_filename", tiny_config, "--fold", "3", check=False)
    assert refused.returncode == 2 and "--fold 3: the config has folds 1 to 2" in refused.stderr
