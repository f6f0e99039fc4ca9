"""Subprocess half of test_backends.py: load .keras models under another backend and
write their logits. Usage: KERAS_BACKEND=jax python _backend_worker.py x.npy a.keras [b.keras ...]
writes a.keras.<backend>.npy next to each model."""

import sys

import keras
import numpy as np

import keras_deeplab  # noqa: F401  (registers the classes)

x = np.load(sys.argv[1])
for model_path in sys.argv[2:]:
    model = keras.saving.load_model(model_path)
    y = model.predict(x, verbose=0)
    y = y["logits"] if isinstance(y, dict) else y
    np.save(f"{model_path}.{keras.backend.backend()}.npy", keras.ops.convert_to_numpy(y))
    print(keras.backend.backend(), type(model).__name__, y.shape)
