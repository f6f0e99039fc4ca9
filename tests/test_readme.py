"""Every code block of README.md runs, so the README cannot drift from the code.

The ```python blocks run in order in one namespace (``import keras_deeplab as kd`` and
``import numpy as np`` given), in a temporary folder; the ```bash blocks run line by line
in a shell (``keras-deeplab`` and ``python`` from this environment). Blocks without a
language (file trees) are text.

A block that cannot run offline or in a test's time is preceded by the HTML comment
``<!-- readme-test: skip (reason) -->``; `test_skipped_blocks_are_few_and_explained` keeps
that list short and explained.

The fixture shrinks what the README describes at full size, by textual substitution
(`SUBSTITUTIONS`, applied to every block) and by one model swap (`TINY_MODEL`):

* dataset roots ``/data/cityscapes`` and ``/data/VOCdevkit`` -> fake trees in the real
  layouts (`kd.data.write_fake_cityscapes` / `write_fake_voc`, 64 px images), ``imgs/`` and
  ``masks/`` -> a 2-image folder dataset, ``street.png`` -> a 64 px photo;
* VOC ``train_aug`` with SBD -> ``train`` (the fake tree has no SBD release);
* sizes: crops and windows 769 / 513 -> 33, batches of 8 -> 2, synthetic 2000 images of
  128 px -> 8 of 32,
  ``total_steps=90_000`` stays (a schedule length);
* ImageNet weights (a download) -> random weights;
* after the Models block, ``model`` is a narrow DeepLabv3+ (ResNet-18, 8 base filters), so
  the training and export blocks take seconds on a CPU.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
# make demo (minutes), the real-dataset recipes, the checkpoint download and the two-process
# JAX run (which tests/test_multiworker_jax.py runs itself).
MAX_SKIPPED = 4

#: (pattern, replacement) applied to every block; {tmp} is the test's folder.
SUBSTITUTIONS = [
    (r'"/data/cityscapes"', '"{tmp}/cityscapes"'),
    (r"/data/cityscapes", "{tmp}/cityscapes"),
    (r'"/data/VOCdevkit"', '"{tmp}/voc/VOCdevkit"'),
    (r'split="train_aug", sbd_root="/data/SBD"', 'split="train"'),
    (r'backbone_weights="imagenet"', "backbone_weights=None"),
    (r"\b769\b", "33"),
    (r"\b513\b", "33"),
    (r"batch_size=8", "batch_size=2"),
    (r"num_images=2000, image_size=128", "num_images=8, image_size=32"),
]

TINY_MODEL = ('model = kd.models.DeepLabV3Plus(num_classes=19, backbone="resnet18", '
              'backbone_kwargs={"base_filters": 8}, aspp_filters=16, decoder_filters=16, '
              'low_level_filters=8)')


def blocks():
    """``[(language, code, skip_reason or None, line)]`` of README.md's fenced blocks."""
    text = open(README).read()
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
        skip = SKIP.search(before[0])
        out.append((m.group(1), m.group(2), skip.group("reason") if skip else None,
                    text[: m.start()].count("\n") + 1))
    return out


def shrink(code, tmp):
    for pattern, replacement in SUBSTITUTIONS:
        code = re.sub(pattern, replacement.replace("{tmp}", str(tmp)), code)
    return code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from PIL import Image

    from keras_deeplab.data.fake_trees import write_fake_cityscapes, write_fake_voc

    tmp = tmp_path_factory.mktemp("readme")
    write_fake_cityscapes(str(tmp / "cityscapes"), {"train": 4, "val": 2}, image_size=64)
    write_fake_voc(str(tmp / "voc"), {"train": 4, "val": 2}, image_size=64)
    rng = np.random.default_rng(0)
    for sub in ("imgs", "masks"):
        (tmp / sub).mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            tmp / "imgs" / f"{i}.png")
        Image.fromarray(rng.integers(0, 7, (48, 64), dtype=np.uint8)).save(
            tmp / "masks" / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp / "street.png")
    return tmp


def test_skipped_blocks_are_few_and_explained():
    skipped = [(line, reason) for lang, _, reason, line in blocks()
               if reason and lang in ("python", "bash")]
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert all(len(reason) > 15 for _, reason in skipped)


@pytest.mark.large
def test_readme_python_blocks_run(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    namespace = {}
    exec("import keras_deeplab as kd\nimport numpy as np", namespace)
    ran = 0
    for lang, code, skip, line in blocks():
        if lang != "python" or skip:
            continue
        try:
            exec(compile(shrink(code, workdir), f"README.md:{line}", "exec"), namespace)
        except Exception as e:  # name the block
            raise AssertionError(f"README.md block at line {line} failed: {e!r}") from e
        ran += 1
        if "kd.models.DeepLabV3Plus(" in code:  # the Models block: shrink its model
            exec(TINY_MODEL, namespace)
    assert ran >= 5


@pytest.mark.large
def test_readme_bash_blocks_run(workdir):
    env = {**os.environ, "PYTHONPATH": REPO,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    ran = 0
    for lang, code, skip, line in blocks():
        if lang != "bash" or skip:
            continue
        script = shrink(code, workdir)
        out = subprocess.run(["bash", "-e", "-c", script], cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"README.md:{line}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        ran += 1
    assert ran >= 1
