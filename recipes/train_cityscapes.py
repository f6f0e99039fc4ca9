"""Train DeepLab on Cityscapes (fine annotations, 19 classes) with the paper's recipe.

    python recipes/train_cityscapes.py --data-dir /data/cityscapes --model deeplabv3plus \
        --backbone resnet101
    python recipes/train_cityscapes.py --synthetic --epochs 2      # fake tree, tiny model

Defaults: output stride 16, crop 769, batch 8, poly lr 0.01 (power 0.9), SGD momentum 0.9,
weight decay 4e-5 on kernels, random scale 0.5-2.0, sliding-window (769) validation
(`keras_deeplab.training.config.DATASET_DEFAULTS`; `--help` lists every flag and default).
"""

from _common import train_from_args, train_parser


def main(argv=None):
    args = train_parser(__doc__.splitlines()[0], "cityscapes").parse_args(argv)
    return train_from_args(args, "cityscapes")


if __name__ == "__main__":
    main()
