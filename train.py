"""Train an RGB+IR fusion YOLO detector. Thin entry point: parse the flags, run the one loop.

    python train.py --data data.yaml
    torchrun --nproc_per_node 2 train.py --data data.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml train.py --data data.yaml

`python train.py --help` lists every flag.
"""

from yolofuse_scale.cli import train_main
from yolofuse_scale.errors import finish

if __name__ == "__main__":
    finish(train_main())
