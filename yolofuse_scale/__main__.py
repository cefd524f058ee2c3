"""``python -m yolofuse_scale CMD`` is ``yolofuse-scale CMD``."""

from yolofuse_scale.cli import main
from yolofuse_scale.errors import finish

finish(main())
