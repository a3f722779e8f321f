"""A pjsua2 (PJSIP) softphone for the tests, run as its own process: calls a SIP URI, plays a
WAV file into the call and records what comes back into another WAV file.

    python pjsua_caller.py URI PLAY.wav RECORD.wav SECONDS CODEC
"""

from __future__ import annotations

import sys
import time

import pjsua2 as pj


class Call(pj.Call):
    def __init__(self, acc: pj.Account, play: str, record: str) -> None:
        super().__init__(acc)
        self.play, self.record = play, record
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.state = ""

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        self.state = info.stateText
        print(f"call state: {info.stateText} {info.lastStatusCode}", flush=True)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(i)
                if self.recorder is None:
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(self.record)
                    audio.startTransmit(self.recorder)
                if self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(self.play, pj.PJMEDIA_FILE_NO_LOOP)
                    self.player.startTransmit(audio)
                print("media active", flush=True)


def main() -> int:
    uri, play, record, seconds, codec = sys.argv[1:6]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for c in ep.codecEnum2():
        ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith(codec + "/") else 0)
    acfg = pj.AccountConfig()
    acfg.idUri = "sip:+15550003333@127.0.0.1"
    acc = pj.Account()
    acc.create(acfg)
    call = Call(acc, play, record)
    call.makeCall(uri, pj.CallOpParam(True))
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline and call.state != "DISCONNCTD":
        ep.libHandleEvents(20)
    if call.state != "DISCONNCTD":
        call.hangup(pj.CallOpParam(True))
        end = time.monotonic() + 3
        while time.monotonic() < end and call.state != "DISCONNCTD":
            ep.libHandleEvents(20)
    recorder = call.recorder
    del call, recorder
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
