"""Numbers as words (English and Turkish): moved to vc-core as part of :mod:`vc.textnorm`.

Kept as a re-export so existing imports keep working; new code imports :mod:`vc.textnorm`.
"""

from __future__ import annotations

from vc.textnorm import MAX_CARDINAL, cardinal, digits, ordinal, year_en

__all__ = ["MAX_CARDINAL", "cardinal", "digits", "ordinal", "year_en"]
