"""How many files and sockets this process may hold open.

A peer keeps one descriptor per file of a torrent open, and a tracker one per client
connection; the usual soft limit (often 1024) is far below what the hard limit allows.
"""

from __future__ import annotations

import resource

__all__ = ["allow_open_files"]


def allow_open_files(needed: int) -> int:
    """Raise the soft limit on open descriptors to `needed`, or as far as the hard limit
    allows; returns the soft limit now (never lowered)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return needed
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft
