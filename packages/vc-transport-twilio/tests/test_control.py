"""Call control end to end: goodbye + hang-up after the final mark, hang-ups without REST
credentials, capacity, cancelling in-flight work, outbound calls (HTTP and ``vc call``)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
from urllib.parse import parse_qs, urlsplit

from twilio_helpers import Recorder, after_greeting, ini, say_audio, twilio_vc
from vc_transport_twilio.testing import twilio_section

from vc.audio import rms

GOODBYE = "goodbye then"


async def test_goodbye_hangs_up_through_rest_only_after_the_final_mark():
    async with twilio_vc(ini(script="goodbye")) as (cloud, vc):
        call = await cloud.place_call()
        await after_greeting(call)
        call.say(say_audio(GOODBYE))
        await call.wait_closed(within=60)
        assert call.ended_by == "rest-hangup"
        [hangup] = [r for r in cloud.rest.requests if r.call_sid == call.call_sid]
        assert hangup.method == "POST" and hangup.form == {"Status": "completed"}
        assert hangup.path == f"/2010-04-01/Accounts/{cloud.account_sid}/Calls/{call.call_sid}.json"
        auth = base64.b64decode(hangup.headers["Authorization"].removeprefix("Basic ")).decode()
        assert auth == f"{cloud.account_sid}:{cloud.auth_token}"
        # The final mark came after the goodbye audio; the hang-up only after it was echoed,
        # i.e. after the caller heard all of the goodbye.
        final = [(t, n) for t, n in call.echoed if n.startswith("final")]
        assert final, call.echoed
        assert hangup.at >= final[-1][0]
        assert call.played and hangup.at >= call.played[-1][0]
        assert len(call.played) == len(call.media)
        tools = [d["name"] for _, d in Recorder.of(call.call_sid, "tool_call")]
        assert tools == ["end_call"]
        # Hanging up a call that has already ended is not an error.
        assert await vc.transport.rest.hangup(call.call_sid) is False


async def test_without_rest_credentials_the_stream_ends_and_the_action_hangs_up():
    async with twilio_vc(
        ini(script="goodbye", extra="[server]\nmax_calls = 1\n"), account_sid=""
    ) as (cloud, vc):
        assert vc.transport.rest is None
        call = await cloud.place_call()
        await after_greeting(call)
        # At capacity: a second call is told so and hung up, the first is unaffected.
        second = await cloud.place_call()
        await second.wait_closed()
        await second.wait_for(lambda: second.action_twiml, what="Connect action")
        assert "<Say>Sorry, all our lines are busy" in second.action_twiml
        assert "<Hangup" in second.action_twiml
        metrics = vc.engine.metrics.registry
        assert metrics.get_sample_value("vc_calls_refused_total", {"reason": "capacity"}) == 1
        call.say(say_audio(GOODBYE))
        await call.wait_closed(within=60)
        assert call.ended_by == "server" and not cloud.rest.requests
        final = [t for t, n in call.echoed if n.startswith("final")]
        assert final and call.closed_at >= final[-1]
        await call.wait_for(lambda: call.action_twiml, what="Connect action")
        assert "<Hangup" in call.action_twiml and "<Dial" not in call.action_twiml
        await call.wait_for(lambda: call.call_sid not in vc.engine.sessions, what="call gone")
        assert metrics.get_sample_value("vc_call_duration_seconds_count",
                                        {"transport": "twilio"}) == 1


async def test_caller_hangup_cancels_in_flight_llm_work():
    text = ini(extra="[llm.fake]\nfirst_token_delay = 8\nfirst_token_timeout = 20\n")
    async with twilio_vc(text) as (cloud, vc):
        llm = vc.engine.provider("llm")
        services = []
        create = llm.create_service

        def recording(ctx):
            services.append(create(ctx))
            return services[-1]

        llm.create_service = recording
        call = await cloud.place_call()
        await after_greeting(call)
        call.say(say_audio("what is the weather like today"))
        await call.wait_for(lambda: Recorder.of(call.call_sid, "transcript"), what="transcript")
        await asyncio.sleep(0.3)  # the model is now "thinking" (8 s before its first token)
        assert services[-1].requests and services[-1].cancelled == 0
        await call.hangup()
        await call.wait_for(
            lambda: call.call_sid not in vc.engine.sessions, within=5, what="call gone"
        )
        assert services[-1].cancelled == 1
        assert not call.speech_frames(after=call.speech_ended[-1])


async def test_outbound_call_through_the_http_endpoint():
    text = ini(extra="[profile.sales]\ngreeting = Hi from sales.\n")
    async with twilio_vc(text, api_token="s3cret-token", caller_id="+15550009999") as (cloud, vc):
        url = vc.url + "/twilio/calls"
        async with cloud.session.post(url, json={"to": "+15551230000"}) as resp:
            assert resp.status == 401
        headers = {"Authorization": "Bearer s3cret-token"}
        async with cloud.session.post(url, json={"number": "x"}, headers=headers) as resp:
            assert resp.status == 400
        async with cloud.session.post(
            url, json={"to": "+15551230000", "profile": "sales"}, headers=headers
        ) as resp:
            assert resp.status == 201
            sid = (await resp.json())["call_sid"]
        [create] = [r for r in cloud.rest.requests if r.call_sid == sid]
        assert create.path == f"/2010-04-01/Accounts/{cloud.account_sid}/Calls.json"
        assert create.form["To"] == "+15551230000" and create.form["From"] == "+15550009999"
        voice = urlsplit(create.form["Url"])
        assert (
            f"{voice.scheme}://{voice.netloc}{voice.path}" == "https://vc.example.com/twilio/voice"
        )
        assert parse_qs(voice.query) == {"profile": ["sales"]}
        # Twilio rings the callee; on answer it fetches the webhook and the bot talks.
        call = await cloud.wait_for_stream(sid)
        await call.wait_for_bot_speech()
        started = Recorder.of(sid, "call_started")[0][1]
        assert started["profile"] == "sales" and started["direction"] == "outbound-api"
        assert started["to"] == "+15551230000"
        await call.hangup()
        await call.wait_closed()


async def test_vc_call_twilio_command_places_a_call():
    text = ini(extra="[profile.sales]\ngreeting = Hi from sales.\n")
    async with twilio_vc(text) as (cloud, _):
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
            f.write(text + "\n" + twilio_section(cloud))
        try:
            env = {**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes"}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "vc.cli",
                "call",
                "twilio",
                "--to",
                "+15551230000",
                "--from",
                "+15550008888",
                "--profile",
                "sales",
                "-c",
                f.name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            os.unlink(f.name)
        assert proc.returncode == 0, err.decode()[-2000:]
        sid = out.decode().strip().splitlines()[-1]
        assert sid.startswith("CA")
        [create] = [r for r in cloud.rest.requests if r.call_sid == sid]
        assert create.form["From"] == "+15550008888"
        call = await cloud.wait_for_stream(sid)
        await call.wait_for_bot_speech()
        assert Recorder.of(sid, "call_started")[0][1]["profile"] == "sales"
        await call.hangup()
        await call.wait_closed()


async def test_development_mode_without_validation(caplog):
    caplog.set_level("WARNING", logger="vc.transport.twilio")
    async with twilio_vc(ini(), validate_signatures="false", public_url="", auth_token="") as (
        cloud,
        vc,
    ):
        assert any("NOT checked" in r.getMessage() for r in caplog.records)
        call = cloud.new_call()
        # No public URL: TwiML URLs come from the Host header (as a tunnel forwards it).
        status, call.twiml = await cloud.post_signed(
            vc.url + "/twilio/voice", call.webhook_params(), signature=""
        )
        assert status == 200
        host = urlsplit(vc.url).netloc
        assert f'url="ws://{host}/twilio/stream"' in call.twiml
        await call.answer(vc.url + "/twilio/voice")
        await call.wait_for_bot_speech()
        await call.hangup()
        await call.wait_closed()


async def test_the_whole_goodbye_is_heard_before_the_hang_up_when_the_tts_is_slow():
    # The TTS takes a moment to start (as real ones do): the goodbye's text is still inside it
    # when end_call runs. The hang-up must wait for its audio, played and echoed.
    async with twilio_vc(ini(script="goodbye", extra="first_audio_delay = 0.25")) as (cloud, _):
        call = await cloud.place_call()
        await after_greeting(call)
        end = call.say(say_audio(GOODBYE))
        await call.wait_closed(within=60)
        [hangup] = [r for r in cloud.rest.requests if r.call_sid == call.call_sid]
        heard = [t for t, pcm in call.played if t >= end and rms(pcm) > 0.001]
        # "Goodbye, have a nice day." at 40 ms per character: 1 s of tone.
        assert len(heard) * 0.02 >= 0.9, f"only {len(heard) * 0.02:.2f}s of the goodbye was heard"
        assert hangup.at >= heard[-1]
        assert len(call.played) == len(call.media)  # nothing sent was left unplayed
