"""The normaliser moved to vc-core (vc.textnorm, tested there); Piper's old modules re-export it."""

from __future__ import annotations

import vc_tts_piper.normalize as piper_normalize
import vc_tts_piper.numwords as piper_numwords

from vc import textnorm


def test_the_old_imports_are_vc_textnorm() -> None:
    for name in piper_normalize.__all__:
        assert getattr(piper_normalize, name) is getattr(textnorm, name)
    for name in piper_numwords.__all__:
        assert getattr(piper_numwords, name) is getattr(textnorm, name)


def test_piper_services_normalise_with_vc_textnorm() -> None:
    from vc_tts_piper import service

    assert service.normalize is textnorm.normalize
    assert piper_normalize.normalize("Saat 10:30'da, 2.500 TL.", "tr") == \
        "Saat on otuzda, iki bin beş yüz lira."
