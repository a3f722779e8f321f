"""The plugin proves it honours vc's TTS contract by subclassing vc's contract suite."""

from vc_tts_espeak import EspeakTTS

from vc.testing.contracts import TTSContract


class TestEspeakContract(TTSContract):
    provider = EspeakTTS


class TestEspeakTurkish(TTSContract):
    provider = EspeakTTS
    language = "tr"
    sentence = "Merhaba, size nasıl yardımcı olabilirim?"
