"""A cache directory seeded from one prepared when the image was built.

An image prepares its models at build time (``vc models prepare --installed`` with
``VC_CACHE_DIR`` pointing into the image): the record of checked model files, Piper's voices
cut in two and their gains, assembled models. At run time vc's cache directory is elsewhere and
starts empty (GKE runs vc on a read-only root filesystem with ``/tmp`` an emptyDir; every Cloud
Run instance starts from the image), so without a seed every container start would hash the
models again, decode Piper whole while a background process cuts it, and measure its gain.

``VC_CACHE_SEED`` names the prepared directory. When ``vc serve`` starts, every file in it that
the cache lacks is linked into the cache (a symbolic link: nothing is copied), so the first
start finds what the build prepared. What vc writes afterwards goes to the cache as before
(a file vc rewrites replaces its link; the seed itself is only read).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("vc.cache")

SEED_ENV = "VC_CACHE_SEED"


def seed_cache(seed: Path, cache: Path) -> int:
    """Link every file under ``seed`` that ``cache`` lacks into ``cache`` (same relative path);
    how many were linked. Never raises: a seed that cannot be read or a cache that cannot be
    written costs only what the seed would have saved (logged as a warning)."""
    linked = 0
    try:
        files = [p for p in sorted(seed.rglob("*")) if p.is_file()]
    except OSError as e:
        log.warning("cache seed %s cannot be read: %s", seed, e)
        return 0
    for source in files:
        target = cache / source.relative_to(seed)
        if target.exists() or target.is_symlink():
            continue  # the cache's own (newer) file wins
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.resolve())
        except OSError as e:
            log.warning("cache seed: cannot link %s into %s: %s", source, cache, e)
            return linked
        linked += 1
    return linked


def seed_from_environment(cache: Path) -> None:
    """``seed_cache`` from ``$VC_CACHE_SEED`` into ``cache``, when it is set."""
    seed = os.environ.get(SEED_ENV, "").strip()
    if not seed:
        return
    if not Path(seed).is_dir():
        log.warning("%s=%s is not a directory: the cache starts empty", SEED_ENV, seed)
        return
    linked = seed_cache(Path(seed), cache)
    if linked:
        log.info("cache %s seeded from %s (%d files)", cache, seed, linked)
