"""The distribution: its name on PyPI, and requirements that keep a lab's newer torch and MONAI.

Checked without the network, from setup.cfg and the installed packages' metadata: pip keeps an
installed torch when every requirement on it in what it installs accepts that version.
"""

import configparser
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import REPO
from unet3d import TESTED_WITH
from unet3d.errors import DISTRIBUTION

# The newest releases on PyPI when the requirements were last checked (`pip index versions torch`, `... monai`).
NEWEST = {"torch": "2.15.0", "monai": "1.6.1"}


def setup_cfg():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


def install_requires():
    """``{name: Requirement}`` of setup.cfg's install_requires."""
    lines = [line for line in setup_cfg()["options"]["install_requires"].splitlines() if line.strip()]
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


def test_the_distribution_is_named_as_in_the_install_hints():
    assert setup_cfg()["metadata"]["name"] == DISTRIBUTION != "unet3d"
    assert metadata.metadata(DISTRIBUTION)["Name"] == DISTRIBUTION  # this environment installed it by that name


def test_requirements_accept_the_newest_releases_and_start_at_the_tested_ones():
    requirements = install_requires()
    for name, newest in NEWEST.items():
        specifier = requirements[name].specifier
        assert specifier.contains(newest), f"setup.cfg: {name}{specifier} refuses {newest}"
        tested = [Version(v) for v in TESTED_WITH["MONAI" if name == "monai" else name]]
        lower = [Version(s.version) for s in specifier if s.operator == ">="]
        assert lower == [min(tested)], f"setup.cfg: {name}{specifier} should start at the oldest tested, {min(tested)}"


def test_nothing_installed_with_unet3d_holds_torch_or_monai_below_the_newest():
    """What pip would weigh when installing unet3d (with its trackers) next to torch 2.15: every requirement on
    torch and MONAI among the installed dependencies, transitively."""
    found, seen, todo = [], set(), [(DISTRIBUTION, {"", "tensorboard", "mlflow"})]
    while todo:
        name, extras = todo.pop()
        if canonicalize_name(name) in seen:
            continue
        seen.add(canonicalize_name(name))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment lacks
        for requirement in map(Requirement, requires):
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
                continue
            if canonicalize_name(requirement.name) in NEWEST:
                found.append((name, requirement))
            todo.append((requirement.name, {"", *requirement.extras}))
    assert {canonicalize_name(r.name) for _, r in found} == set(NEWEST)
    refused = [f"{name}: {r}" for name, r in found if not r.specifier.contains(NEWEST[canonicalize_name(r.name)])]
    assert not refused, refused
