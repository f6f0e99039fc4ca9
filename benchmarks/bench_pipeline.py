"""Images/s of the Cityscapes training input pipeline (`kd.data.cityscapes`, training mode).

A fake Cityscapes tree of 2048x1024 PNG pairs (smooth random images, random labelIds) is written
to a temp folder, then the real pipeline (decode, labelId->trainId, random scale 0.5-2.0, pad,
769 crop, flip, batch 8, prefetch) is timed after a warm-up.

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

    import keras_deeplab as kd

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        write_tree(root, args.num_images, size)
        print(f"wrote {args.num_images} {size[1]}x{size[0]} PNG pairs in "
              f"{time.perf_counter() - t0:.1f}s")
        ds = kd.data.cityscapes(root, "train", batch_size=args.batch_size, crop_size=args.crop,
                                training=True, repeat=True, cache=False, deterministic=False)
        it = iter(ds)
        for _ in range(2):  # warm-up: graph tracing, thread pools
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            batch = next(it)
        elapsed = time.perf_counter() - t0
        assert batch["images"].shape == (args.batch_size, args.crop, args.crop, 3)
        del it, ds  # stop prefetch threads before the tree is deleted
    rate = args.batches * args.batch_size / elapsed
    result = {"benchmark": "cityscapes_pipeline", "images_per_s": round(rate, 2),
              "crop": args.crop, "batch_size": args.batch_size, "image_size": list(size),
              "cpu_count": os.cpu_count(), "quick": args.quick}
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
