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


def forbid_font_downloads() -> None:
    """Make Ultralytics' font lookup local-only: a missing Arial falls back to PIL's built-in font.

    ``ultralytics.utils.checks.check_font`` downloads Arial.ttf when it is not installed, and it checks
    the URL with a network request even offline (YOLO_OFFLINE does not cover it). Its callers
    (``Annotator``, dataset checks) use PIL's default font when it returns None. Replaces the
    function in every module that imported it by name; costs one import of Ultralytics' checks.
    """
    import sys
    from pathlib import Path

    from ultralytics.utils import USER_CONFIG_DIR, checks

    if getattr(checks.check_font, "_local_only", False):
        return

    def check_font_local(font: str = "Arial.ttf"):
        from matplotlib import font_manager

        name = Path(font).name
        if (USER_CONFIG_DIR / name).exists():
            return USER_CONFIG_DIR / name
        matches = [f.fname for f in font_manager.fontManager.ttflist if font in f.fname and os.path.exists(f.fname)]
        return matches[0] if matches else None

    check_font_local._local_only = True
    checks.check_font = check_font_local
    # Modules imported later bind the patched function; those already imported are patched here.
    for mod in ("ultralytics.utils.plotting", "ultralytics.data.utils"):
        if hasattr(sys.modules.get(mod), "check_font"):
            sys.modules[mod].check_font = check_font_local
