"""vc's TTS contract suite, in English and in Turkish (also run from a wheel installed in a fresh
virtual environment: packages/vc-core/tests/test_plugin_author_example.py)."""

from vc_tts_espeak import EspeakTTS

from vc.testing.contracts import TTSContract


class TestEspeakContract(TTSContract):
    provider = EspeakTTS


class TestEspeakTurkish(TTSContract):
    provider = EspeakTTS
    language = "tr"
    sentence = "Merhaba, size nasıl yardımcı olabilirim?"
