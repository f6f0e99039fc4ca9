"""Small shared helpers (registration, argument checks)."""

import keras

#: Decorator used once on every public class so that ``.keras`` files reload it.
register = keras.saving.register_keras_serializable(package="keras_deeplab")


# The key under which `augment_on="device"` batches carry their augmentation random numbers.
AUGMENT_PARAMS = "augment_params"


def as_pair(value, name):
    """Returns ``value`` as a tuple of two ints (accepts an int or a pair)."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")
    return value


def check_output_stride(output_stride, allowed=(8, 16, 32)):
    if output_stride not in allowed:
        raise ValueError(
            f"output_stride must be one of {tuple(allowed)}, got {output_stride!r}. "
            "DeepLab uses 16 for training and 8 for the most accurate evaluation."
        )
    return int(output_stride)
