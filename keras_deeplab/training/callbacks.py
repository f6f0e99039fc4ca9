"""keras_deeplab.training.callbacks (being written)."""
