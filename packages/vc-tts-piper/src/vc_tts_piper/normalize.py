"""Text normalisation before synthesis: moved to vc-core as :mod:`vc.textnorm`.

Kept as a re-export so ``from vc_tts_piper.normalize import normalize`` keeps working; new code
imports :mod:`vc.textnorm`.
"""

from __future__ import annotations

from vc.textnorm import lower, normalize, primary, upper

__all__ = ["lower", "normalize", "primary", "upper"]
