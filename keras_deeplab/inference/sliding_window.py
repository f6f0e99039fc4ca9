"""Sliding-window (tiled) inference for images larger than the model input."""

import math

import numpy as np


def tile_starts(length, window, overlap):
    """Evenly spread window start positions covering [0, length).

    Consecutive windows overlap by at least `overlap * window` pixels; the
    first starts at 0 and the last ends at `length`.
    """
    if length <= window:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    count = math.ceil((length - window) / stride) + 1
    return [int(round(v)) for v in np.linspace(0, length - window, count)]


def sliding_window_logits(run, image, window, overlap=1.0 / 3.0, batch_size=1):
    """Averages per-tile logits over an image.

    Args:
        run: callable mapping float32 (B, h, w, 3) in [0, 255] to
            logits (B, h, w, C).
        image: float32 (H, W, 3).
        window: (h, w) tile size. Images smaller than the window are padded
            (symmetric reflection) and the padding cropped off again.
        overlap: float in [0, 1). Fraction of the window shared by
            neighbouring tiles. Defaults to 1/3.
        batch_size: int. Tiles per call of `run`. Defaults to 1.

    Returns:
        float32 (H, W, C): the mean of the logits of all tiles covering each
        pixel.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    height, width = image.shape[:2]
    win_h, win_w = int(window[0]), int(window[1])
    pad_h, pad_w = max(0, win_h - height), max(0, win_w - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    full_h, full_w = image.shape[:2]
    boxes = [
        (y, x)
        for y in tile_starts(full_h, win_h, overlap)
        for x in tile_starts(full_w, win_w, overlap)
    ]
    total = None
    count = np.zeros((full_h, full_w, 1), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        tiles = np.stack([image[y : y + win_h, x : x + win_w] for y, x in chunk]).astype(np.float32)
        logits = np.asarray(run(tiles), np.float32)
        if total is None:
            total = np.zeros((full_h, full_w, logits.shape[-1]), np.float32)
        for (y, x), tile_logits in zip(chunk, logits):
            total[y : y + win_h, x : x + win_w] += tile_logits
            count[y : y + win_h, x : x + win_w] += 1.0
    return (total / count)[:height, :width]
