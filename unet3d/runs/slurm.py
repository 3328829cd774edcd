"""A SLURM job array that trains each cross-validation fold as its own task."""

import shlex
import shutil
import sys
from pathlib import Path

from unet3d.atomic import write_text
from unet3d.errors import UserError


def train_command():
    """The unet3d-train of this environment, so cluster jobs run the same installation."""
    beside = Path(sys.executable).parent / "unet3d-train"
    found = str(beside) if beside.exists() else shutil.which("unet3d-train")
    return shlex.quote(found) if found else "unet3d-train"


def slurm_script(work_dir, n_folds, job_name, template=None, account=None, time=None,
                 partition=None, gpus=None, cpus=None):
    """The text of ``submit_folds.sh``: ``#SBATCH --array=1-K`` and one fold per task.

    Args:
        template: text placed after the generated directives (the user's own ``#SBATCH``
            lines, ``module load`` ...); a ``#!`` line in it replaces the default one.
        account, time, partition, gpus, cpus: become ``#SBATCH`` directives when given.
    """
    template_lines = (template or "").splitlines()
    shebang = "#!/bin/bash"
    if template_lines and template_lines[0].startswith("#!"):
        shebang = template_lines.pop(0)
    work_dir = Path(work_dir).resolve()
    directives = [f"--job-name={job_name}", f"--array=1-{n_folds}",
                  f"--output={work_dir}/slurm-%A_%a.out"]
    for flag, value in (("account", account), ("time", time), ("partition", partition),
                        ("gres", f"gpu:{gpus}" if gpus else None), ("cpus-per-task", cpus)):
        if value:
            directives.append(f"--{flag}={value}")
    lines = [shebang] + [f"#SBATCH {d}" for d in directives] + template_lines
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(str(work_dir))}",
        f"{train_command()} --config_filename fold${{SLURM_ARRAY_TASK_ID}}.json",
    ]
    return "\n".join(lines) + "\n"


def write_slurm_script(work_dir, n_folds, job_name, template_filename=None, **directives):
    """Write ``<work_dir>/submit_folds.sh``; returns its path."""
    template = None
    if template_filename:
        try:
            template = Path(template_filename).read_text(encoding="utf-8")
        except OSError as error:
            raise UserError(f"{template_filename}: cannot read SLURM template ({error.strerror})") from None
    path = Path(work_dir) / "submit_folds.sh"
    write_text(path, slurm_script(work_dir, n_folds, job_name, template, **directives))
    path.chmod(0o755)
    return path
