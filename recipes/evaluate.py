"""Evaluate a trained model (.keras) on Cityscapes, VOC or a folder dataset.

    python recipes/evaluate.py --model saved_models/run/best.keras --dataset cityscapes \
        --data-dir /data/cityscapes --sliding-window 769 --output-stride 8 \
        --scales 0.75,1.0,1.25 --flip --export-dir results/val --official
    python recipes/evaluate.py --synthetic          # trains nothing: tiny random model, fake tree

The flags are those of ``keras-deeplab evaluate`` (`keras_deeplab.training.config`), except
that --model may be left out with --synthetic.
"""

import argparse

import _common  # noqa: F401  (puts the checkout on sys.path)

from keras_deeplab.training.config import add_evaluate_arguments


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_evaluate_arguments(p, model_required=False)


def main(argv=None):
    from keras_deeplab.training import experiment

    return experiment.evaluate_command(parser().parse_args(argv))


if __name__ == "__main__":
    main()
