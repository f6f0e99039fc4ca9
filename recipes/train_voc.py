"""Train DeepLab on PASCAL VOC 2012 (21 classes; train_aug with SBD when available).

    python recipes/train_voc.py --data-dir /data/VOCdevkit --train-split train_aug
    python recipes/train_voc.py --synthetic --epochs 2      # fake VOC tree, tiny model

Defaults (DeepLabv3+ on VOC): output stride 16, crop 513, batch 16, poly lr 0.007 (power
0.9), SGD momentum 0.9, weight decay 4e-5 on kernels, random scale 0.5-2.0, whole-image
validation (`keras_deeplab.training.config.DATASET_DEFAULTS`; `--help` lists every flag).
"""

from _common import train_from_args, train_parser


def main(argv=None):
    args = train_parser(__doc__.splitlines()[0], "voc").parse_args(argv)
    return train_from_args(args, "voc")


if __name__ == "__main__":
    main()
