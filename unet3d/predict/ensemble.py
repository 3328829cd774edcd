"""An ensemble of configurations (a 3d and a 2d one, say): each member preprocesses a case its own way (spacing,
crop, patch) and brings its probabilities back to the case's input grid, where they are averaged."""

import dataclasses
import logging

from unet3d.errors import UserError
from unet3d.predict.inference import case_probabilities, check_before_loading, write_case
from unet3d.predict.postprocess import clean_up_steps
from unet3d.predict.write import output_paths

log = logging.getLogger("unet3d")


@dataclasses.dataclass(frozen=True)
class Member:
    """One configuration of an ensemble.

    Args:
        experiment: the ``Experiment`` its models were trained with.
        models: its models (a list is averaged first: a fold ensemble).
        prediction: its ``PredictionSettings`` (default: the experiment's).
    """

    experiment: object
    models: list
    prediction: object = None


def check_members(members):
    """Raise unless every member decodes the same labels the same way (their probabilities mean the same)."""
    first = members[0].experiment
    for member in members[1:]:
        theirs, ours = member.experiment.labels, first.labels
        if (theirs.values, theirs.mode, theirs.names) != (ours.values, ours.mode, ours.names):
            raise UserError(f"{member.experiment.filename}: labels {theirs.mode} {list(theirs.values)} differ from "
                            f"{first.filename}'s {ours.mode} {list(ours.values)}; an ensemble averages the same "
                            "channels")


def predict_ensemble(members, case_list, output_dir, device, save_probabilities=False, keep_largest=False, tta=False,
                     amp=True, overwrite=False, num_workers=0, postprocessing=None):
    """Predict each case with every ``Member`` and write the mean of their probabilities on the case's input grid,
    decoded as the first member's settings say and cleaned by its ``prediction.min_component_size`` or
    ``keep_largest``, else by ``postprocessing`` (steps chosen on the ensemble's out-of-fold predictions); returns
    the written paths.

    The other arguments are those of ``predict_cases``.
    """
    check_members(members)
    first = members[0]
    prediction = first.prediction or first.experiment.prediction
    check_before_loading(first.experiment, save_probabilities)
    steps = clean_up_steps(first.experiment.labels, prediction.min_component_size, keep_largest, postprocessing)
    protected = [path for member in members for path in member.experiment.input_files()]
    targets = output_paths(case_list, output_dir, overwrite, prediction.output_format, protected)
    log.info("predicting %d case(s) with an ensemble of %d configurations (%s)", len(case_list), len(members),
             ", ".join(str(member.experiment.filename) for member in members))
    streams = [case_probabilities(member.experiment, member.models, case_list, device, member.prediction, tta, amp,
                                  num_workers) for member in members]
    written = []
    for results in zip(*streams):
        case, probabilities = results[0]
        total = probabilities
        for other_case, other in results[1:]:
            assert other_case.id == case.id  # every member's loader keeps the order of case_list
            total = total + other
        mean = total / len(results)
        mean.affine = probabilities.affine
        written.append(write_case(first.experiment, prediction, case, mean, targets[case.id], save_probabilities,
                                  steps))
    return written
