"""Images/s of the Cityscapes training input pipeline (`kd.data.cityscapes`, training mode).

A fake Cityscapes tree of 2048x1024 PNG pairs (smooth random images, random labelIds) is written
to a temp folder, then these pipelines are timed after a warm-up, all in one run:

- `decode only`: read + decode both PNGs + batch (the ceiling any augmentation sits under);
- `ours`: `kd.data.cityscapes` with the DeepLab augmentation (random scale 0.5-2.0, pad,
  769 crop, flip; the crop is sampled straight from the original image);
- `ours + extras`: also rotation (10 deg), photometric jitter and blur (p=0.5);
- `reference`: the textbook tf.data recipe on the same decoded examples: resize the whole
  image (bilinear / nearest) -> pad -> `tf.image.random_crop` -> flip.

    python benchmarks/bench_pipeline.py            # 32 pairs, 30 timed batches
    python benchmarks/bench_pipeline.py --quick    # small check that it runs
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image


def write_tree(root, num_images, size, seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(num_images):
        city = f"city{i % 3}"
        img_dir = os.path.join(root, "leftImg8bit", "train", city)
        gt_dir = os.path.join(root, "gtFine", "train", city)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(gt_dir, exist_ok=True)
        # smooth content compresses like a real photo, unlike white noise
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        labels = rng.integers(0, 34, (h // 32, w // 32), dtype=np.uint8)
        label = Image.fromarray(labels).resize((w, h), Image.NEAREST)
        stem = f"{city}_000000_{i:06d}"
        image.save(os.path.join(img_dir, f"{stem}_leftImg8bit.png"))
        label.save(os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=769)
    parser.add_argument("--output", default=None, help="append the result as JSON to this file")
    args = parser.parse_args()
    size = (1024, 2048)
    if args.quick:
        args.num_images, args.batches, args.batch_size, args.crop = 4, 3, 2, 129
        size = (256, 512)

    import tensorflow as tf

    import keras_deeplab as kd

    def reference_augment(ex, crop):
        image = tf.cast(ex["images"], tf.float32)
        mask = ex["segmentation_masks"]
        scale = tf.random.uniform([], 0.5, 2.0)
        size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
        image = tf.image.resize(image, size, "bilinear")
        mask = tf.image.resize(mask, size, "nearest")
        pad = [[0, tf.maximum(crop - size[0], 0)], [0, tf.maximum(crop - size[1], 0)], [0, 0]]
        image = tf.pad(image, pad, constant_values=124.0)
        mask = tf.pad(mask, pad, constant_values=255)
        both = tf.concat([image, tf.cast(mask, tf.float32)], -1)
        both = tf.image.random_flip_left_right(tf.image.random_crop(both, [crop, crop, 4]))
        return {"images": both[..., :3], "segmentation_masks": tf.cast(both[..., 3:], tf.int32)}

    def rate(ds):
        it = iter(ds)
        for _ in range(2):  # warm-up: graph tracing, thread pools
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        elapsed = time.perf_counter() - t0
        del it
        return args.batches * args.batch_size / elapsed

    common = dict(batch_size=args.batch_size, crop_size=args.crop, training=True, repeat=True,
                  cache=False, deterministic=False)
    extras = {"max_rotation": 10, "brightness": 0.1, "contrast": 0.2, "saturation": 0.2,
              "hue": 0.05, "blur_prob": 0.5}
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        write_tree(root, args.num_images, size)
        print(f"wrote {args.num_images} {size[1]}x{size[0]} PNG pairs in "
              f"{time.perf_counter() - t0:.1f}s")
        source = kd.data.CityscapesSource(root, "train")
        autotune = tf.data.AUTOTUNE
        decoded = source.dataset().repeat()
        rates = {
            "decode_only": rate(decoded.batch(args.batch_size).prefetch(autotune)),
            "ours": rate(kd.data.cityscapes(root, "train", **common)),
            "ours_extras": rate(kd.data.cityscapes(root, "train", augment=extras, **common)),
            "reference": rate(decoded.map(lambda ex: reference_augment(ex, args.crop), autotune,
                                          deterministic=False)
                              .batch(args.batch_size).prefetch(autotune)),
        }
    for name, value in rates.items():
        print(f"{name:12s} {value:7.2f} images/s")
    print(f"ours / reference: x{rates['ours'] / rates['reference']:.2f}; "
          f"ours / decode only: {rates['ours'] / rates['decode_only']:.0%}")
    result = {"benchmark": "cityscapes_pipeline", "images_per_s": round(rates["ours"], 2),
              "rates": {k: round(v, 2) for k, v in rates.items()},
              "crop": args.crop, "batch_size": args.batch_size, "image_size": list(size),
              "cpu_count": os.cpu_count(), "quick": args.quick}
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
