"""Dense CRF throughput at 513x513 with 21 labels: our process pool vs one plain pydensecrf2 call.

Images: crops/flips of a real photograph (matplotlib's sample photo), 513x513 — the
permutohedral lattice's cost depends on image statistics (how many lattice cells the
(x, y, r, g, b) features occupy), so flat synthetic images would flatter the numbers.
Probabilities: network-like maps — the photo is over-segmented into colour clusters,
each cluster gets one of 21 classes, and the one-hot map is pooled to 1/8 resolution
(output stride 8), upsampled bilinearly and softened; so only a few classes are present
and boundaries are blurry, as in a DeepLab output.

Rows (all 10 mean-field iterations, DeepLab v2 kernels):
  plain        one direct pydensecrf2 call per image, one process (the reference).
  exact/pool   kd.inference.DenseCRF().refine_batch over all cores — same result as plain.
  prune/pool   + min_label_probability=1e-3 (drops labels absent from the image).
  half/pool    + scale=0.5 (CRF at half resolution, marginals upsampled bilinearly).
  half+prune   both.
Each fast row reports its pixel agreement with the exact CRF labels.

    python benchmarks/bench_crf.py            # 16 images, 513x513, 21 labels
    python benchmarks/bench_crf.py --quick    # 4 images, 257x257 (smoke check)
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, write_json  # noqa: E402


def natural_images(num, size, seed=0):
    import matplotlib
    import numpy as np
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    photo = Image.open(path).convert("RGB")
    rng = np.random.default_rng(seed)
    w, h = photo.size
    out = []
    for _ in range(num):
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
        arr = np.array(crop, dtype=np.uint8)
        out.append(np.ascontiguousarray(arr[:, ::-1]) if rng.random() < 0.5 else arr)
    return out


def network_like_probabilities(image, num_classes, rng, clusters=5, stride=8):
    """Blurry few-class probability map loosely aligned with the image content."""
    import numpy as np
    from PIL import Image

    h, w = image.shape[:2]
    pixels = image.reshape(-1, 3).astype(np.float32)
    centres = pixels[rng.choice(len(pixels), clusters, replace=False)]
    for _ in range(5):  # a few k-means steps on colour
        assign = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for k in range(clusters):
            if np.any(assign == k):
                centres[k] = pixels[assign == k].mean(0)
    classes = rng.choice(num_classes, clusters, replace=False)
    labels = classes[assign].reshape(h, w)
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    small = (max(1, h // stride), max(1, w // stride))
    logits = np.empty((h, w, num_classes), np.float32)
    for c in range(num_classes):
        ch = Image.fromarray(onehot[..., c], mode="F").resize(small[::-1], Image.BOX)
        logits[..., c] = np.asarray(ch.resize((w, h), Image.BILINEAR))
    # Confident network: classes absent from the image sit ~8 logits lower everywhere.
    bias = np.where(np.isin(np.arange(num_classes), classes), 0.0, -8.0).astype(np.float32)
    logits = 6.0 * logits + bias + rng.normal(0, 0.5, logits.shape).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def plain_pydensecrf(image, probs, crf):
    import numpy as np
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    h, w, c = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.transpose(2, 0, 1))))
    d.addPairwiseGaussian(sxy=crf.gaussian_sxy, compat=crf.gaussian_compat)
    d.addPairwiseBilateral(sxy=crf.bilateral_sxy, srgb=crf.bilateral_srgb, rgbim=image,
                           compat=crf.bilateral_compat)
    return np.array(d.inference(crf.iterations)).reshape(c, h, w).transpose(1, 2, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="default: all usable cores")
    parser.add_argument("--plain-images", type=int, default=4, help="images timed with the plain call")
    parser.add_argument("--quick", action="store_true", help="4 images of 257x257")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "crf.json"))
    args = parser.parse_args()
    if args.quick:
        args.size, args.num_images, args.plain_images = 257, 4, 2

    import numpy as np

    from keras_deeplab.inference import DenseCRF
    from keras_deeplab.inference.crf import default_num_workers

    workers = args.workers or default_num_workers()
    rng = np.random.default_rng(0)
    images = natural_images(args.num_images, args.size)
    probs = [network_like_probabilities(im, args.num_classes, rng) for im in images]
    present = np.mean([(p.reshape(-1, p.shape[-1]).max(0) >= 1e-3).sum() for p in probs])
    print(f"{args.num_images} images {args.size}x{args.size}, {args.num_classes} labels "
          f"({present:.1f} with p >= 1e-3 on average), {args.iterations} iterations, {workers} workers")

    base = DenseCRF(iterations=args.iterations)
    results = {"machine": machine(), "size": args.size, "num_images": args.num_images,
               "num_classes": args.num_classes, "iterations": args.iterations, "workers": workers,
               "crf": base.get_config(), "rows": {}}

    t = time.perf_counter()
    for im, p in zip(images[: args.plain_images], probs[: args.plain_images]):
        plain_pydensecrf(im, p, base)
    sec = (time.perf_counter() - t) / args.plain_images
    results["rows"]["plain"] = {"sec_per_image": sec, "images_per_s": 1 / sec}
    print(f"plain pydensecrf2 (1 process)    : {sec:6.2f} s/img  = {1 / sec:5.2f} img/s")

    exact = None
    modes = [
        ("exact/pool", {}),
        ("prune/pool", {"min_label_probability": 1e-3}),
        ("half/pool", {"scale": 0.5}),
        ("half+prune/pool", {"scale": 0.5, "min_label_probability": 1e-3}),
    ]
    for name, kwargs in modes:
        crf = DenseCRF(iterations=args.iterations, num_workers=workers, **kwargs)
        t = time.perf_counter()
        out = crf.refine_batch(images, probs)
        sec = time.perf_counter() - t
        row = {"config": kwargs, "images_per_s": args.num_images / sec,
               "sec_per_image": sec / args.num_images}
        labels = [q.argmax(-1) for q in out]
        if exact is None:
            exact = labels
        else:
            row["label_agreement_with_exact"] = float(
                np.mean([(a == b).mean() for a, b in zip(labels, exact)])
            )
        results["rows"][name] = row
        agree = row.get("label_agreement_with_exact")
        print(f"{name:16s} ({workers} processes) : {row['images_per_s']:5.2f} img/s"
              + (f", labels agree with exact on {100 * agree:.2f}% of pixels" if agree is not None else ""))
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
