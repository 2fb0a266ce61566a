"""Files that hold secrets (a config with passwords, Docker's config.json) should not be world-readable."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

log = logging.getLogger("gcrsync")


def check_permissions(path: Path) -> bool:
    """Warn (and return True) if ``path``, which holds secrets, is readable by every user on the machine."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & stat.S_IROTH:
        log.warning("%s contains credentials and is readable by all users; run: chmod 600 %s", path, path)
        return True
    return False
