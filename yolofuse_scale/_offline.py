"""Keep Ultralytics offline and quiet before anything imports it.

Ultralytics probes DNS at import (``is_online``), writes a settings file under the user's config
directory, may download fonts for plots and may sync events. A training cluster node, CI and this
project's sandbox have no network, so every entry point imports this module first. The variables are
only defaults: a user who exported their own values keeps them.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("YOLO_OFFLINE", "1")  # skip the DNS probe and every hub call
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # never pip-install at run time
os.environ.setdefault("YOLO_VERBOSE", "false")  # our logger reports; Ultralytics' stays quiet
# Settings live in a private folder so a read-only home or a shared one is never written.
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "yolofuse_scale_ultralytics"))
