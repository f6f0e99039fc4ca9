"""Argument parsing shared by the recipes. No logic and no flag declarations of its own: the
flags come from the dataclasses of `keras_deeplab.training.config` (one declaration each,
shared with ``keras-deeplab train|evaluate``) and the parsed flags go to
`keras_deeplab.training.experiment`."""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)

from keras_deeplab.training.config import add_train_arguments  # noqa: E402


def train_parser(description, dataset):
    """The parser of a training recipe for ``dataset``: every `RunConfig` flag, with the
    dataset's DeepLab defaults (`config.DATASET_DEFAULTS`) shown in ``--help``."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_train_arguments(p, dataset)


def train_from_args(args, dataset):
    """Parsed flags -> `experiment.train` (writes the fake tree first with --synthetic)."""
    from keras_deeplab.training import experiment

    return experiment.train_command(args, dataset, recipe=" ".join(sys.argv))
