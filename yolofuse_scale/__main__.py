"""``python -m yolofuse_scale CMD`` is ``yolofuse-scale CMD``."""

import sys

from yolofuse_scale.cli import main

sys.exit(main())
