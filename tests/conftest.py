"""Shared test setup: quiet TensorFlow, deterministic seeds, a tiny model factory."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny_backbone_kwargs():
    """A narrow ResNet-18 (base width 8): the whole DeepLab runs in milliseconds."""
    return {"base_filters": 8}
