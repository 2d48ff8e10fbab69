"""Coze credentials that last: OAuth JWT service apps, renewed tokens, and refused tokens.

The fake token endpoint is tied to cozepy: cozepy's own JWT OAuth client gets tokens from it, and
our client's requests are compared with cozepy's, field by field.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cozepy import AsyncCoze, AsyncJWTAuth, AsyncJWTOAuthApp, CozeAPIError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from voicebridge.config import Settings
from voicebridge.speech.coze_auth import JwtApp, StaticToken, load_private_key, signed_assertion
from voicebridge.speech.errors import ConfigError, ErrorKind, SpeechError
from voicebridge.speech.models import AudioClip, AudioFormat, SynthesizeOptions
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_VOICES, FakeCoze, FakeJwtApp

APP, PRIVATE_KEY = FakeJwtApp.generate()
OTHER_APP, OTHER_KEY = FakeJwtApp.generate("7300000000001", "kid_other")
TONE = make_tone("ogg", 440.0, 1.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoze]:
    async with FakeCoze(jwt_apps=[APP]) as server:
        yield server


def jwt_values(fake: FakeCoze, **extra: str) -> dict[str, str]:
    return {"COZE_JWT_CLIENT_ID": APP.client_id, "COZE_JWT_PUBLIC_KEY_ID": APP.public_key_id,
            "COZE_JWT_PRIVATE_KEY": PRIVATE_KEY.strip().replace("\n", "\\n"),  # one line, as .env files hold it
            "COZE_API_BASE": fake.base_url, "COZE_WS_BASE": fake.ws_base_url,
            "COZE_VOICE_ID": DEFAULT_VOICES[0].voice_id, **extra}


def jwt_service(fake: FakeCoze, retrier: Retrier, **extra: str) -> SpeechService:
    return SpeechService.from_settings(Settings.from_values(jwt_values(fake, **extra)).speech, retrier=retrier)


# ------------------------------------------------------------------------------------ the wire, against cozepy


async def test_cozepy_jwt_client_gets_tokens_from_the_fake_and_they_work(fake: FakeCoze) -> None:
    oauth_app = AsyncJWTOAuthApp(APP.client_id, PRIVATE_KEY, APP.public_key_id, base_url=fake.base_url)
    token = await oauth_app.get_access_token(ttl=900)
    assert token.access_token.startswith("czs_") and token.expires_in == pytest.approx(time.time() + 900, abs=5)
    coze = AsyncCoze(auth=AsyncJWTAuth(oauth_app=oauth_app), base_url=fake.base_url)
    voices = [voice async for voice in await coze.audio.voices.list()]
    assert [voice.voice_id for voice in voices] == [voice.voice_id for voice in DEFAULT_VOICES if voice.state == "cloned"]
    assert [call.token_state for call in fake.rest_calls] == ["valid"]

    wrong_key = AsyncJWTOAuthApp(APP.client_id, OTHER_KEY, APP.public_key_id, base_url=fake.base_url)
    with pytest.raises(CozeAPIError, match="signature"):
        await wrong_key.get_access_token(ttl=900)


def test_the_assertion_is_base64url_without_padding() -> None:
    assertion = signed_assertion(load_private_key(PRIVATE_KEY), APP.public_key_id, APP.client_id, "api.coze.cn", 1_700_000_000)
    parts = assertion.split(".")
    assert len(parts) == 3 and "=" not in assertion  # RFC 7515: no padding (a 256-byte signature would need "==")
    assert all(set(part) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for part in parts)
    claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    assert re.fullmatch(r"1700000000:[0-9a-f]{8}:[0-9a-f]{16}", claims["jti"])  # cozepy's jti (spec 1.3)


def test_keys_that_cannot_sign_for_coze_are_refused_saying_why() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match=r"the key is not an RSA key \(Coze JWT apps sign with RS256\)"):
        load_private_key(ec_key)
    with pytest.raises(ValueError, match="not a PEM private key without a passphrase"):
        load_private_key("-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----")


async def test_our_token_request_is_the_one_cozepy_sends(fake: FakeCoze) -> None:
    await AsyncJWTOAuthApp(APP.client_id, PRIVATE_KEY, APP.public_key_id, base_url=fake.base_url).get_access_token(ttl=3600)
    ours = JwtApp(APP.client_id, PRIVATE_KEY, APP.public_key_id, fake.base_url)
    token = await ours.token()
    await ours.aclose()
    theirs, mine = fake.token_requests
    assert (theirs.status, mine.status) == (200, 200) and mine.access_token == token
    assert mine.jwt_header == theirs.jwt_header == {"alg": "RS256", "typ": "JWT", "kid": APP.public_key_id}
    assert mine.claims is not None and theirs.claims is not None
    assert set(mine.claims) == set(theirs.claims) == {"iss", "aud", "iat", "exp", "jti"}
    assert (mine.claims["iss"], mine.claims["aud"]) == (theirs.claims["iss"], theirs.claims["aud"]) == (
        APP.client_id, f"127.0.0.1:{fake.port}")
    assert mine.claims["exp"] - mine.claims["iat"] == theirs.claims["exp"] - theirs.claims["iat"]
    # cozepy adds "scope": null; other clients leave it out (spec §1.3).
    assert mine.body == {key: value for key, value in theirs.body.items() if key != "scope"}
    assert mine.headers["Content-Type"] == theirs.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("change", "refusal"),
    [({"key": OTHER_KEY}, "signature"), ({"kid": "kid_unknown"}, "kid"), ({"iss": "999"}, "iss"),
     ({"aud": "api.coze.cn"}, "aud"), ({"now": int(time.time()) - 7200}, "expired")],
)
async def test_the_fake_checks_every_part_of_the_assertion(fake: FakeCoze, change: dict[str, object], refusal: str) -> None:
    key = load_private_key(str(change.get("key", PRIVATE_KEY)))
    assertion = signed_assertion(key, str(change.get("kid", APP.public_key_id)), str(change.get("iss", APP.client_id)),
                                 str(change.get("aud", f"127.0.0.1:{fake.port}")), int(change.get("now", time.time())))  # type: ignore[call-overload]
    body = {"duration_seconds": 900, "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        answer = await client.post("/api/permission/oauth2/token", json=body, headers={"Authorization": f"Bearer {assertion}"})
        fresh = signed_assertion(load_private_key(PRIVATE_KEY), APP.public_key_id, APP.client_id, f"127.0.0.1:{fake.port}",
                                 int(time.time()))
        first = await client.post("/api/permission/oauth2/token", json=body, headers={"Authorization": f"Bearer {fresh}"})
        replayed = await client.post("/api/permission/oauth2/token", json=body, headers={"Authorization": f"Bearer {fresh}"})
    assert answer.status_code == 401 and refusal in answer.json()["error_message"]
    assert first.status_code == 200 and replayed.status_code == 401 and "jti" in replayed.json()["error_message"]


# ------------------------------------------------------------------------------------ configuration


def test_the_private_key_is_taken_with_escapes_real_newlines_or_from_a_file(tmp_path: Path) -> None:
    base = {"COZE_JWT_CLIENT_ID": APP.client_id, "COZE_JWT_PUBLIC_KEY_ID": APP.public_key_id}
    escaped = Settings.from_values({**base, "COZE_JWT_PRIVATE_KEY": PRIVATE_KEY.strip().replace("\n", "\\n")})
    multiline = Settings.from_values({**base, "COZE_JWT_PRIVATE_KEY": PRIVATE_KEY})
    (tmp_path / "coze.pem").write_text(PRIVATE_KEY)
    from_file = Settings.from_values({**base, "COZE_JWT_PRIVATE_KEY_FILE": str(tmp_path / "coze.pem")})
    for settings in (escaped, multiline, from_file):
        assert settings.speech.coze_jwt is not None and settings.speech.coze_jwt.private_key == PRIVATE_KEY.strip()
        assert settings.speech.asr_chain == ("coze",) and settings.speech.tts_chain == ("coze",)
        assert PRIVATE_KEY.strip() in settings.secrets()


@pytest.mark.parametrize(
    ("values", "named"),
    [({"COZE_JWT_CLIENT_ID": "1"}, "COZE_JWT_PUBLIC_KEY_ID is not set"),
     ({"COZE_JWT_CLIENT_ID": "1", "COZE_JWT_PUBLIC_KEY_ID": "k"}, "COZE_JWT_PRIVATE_KEY (or COZE_JWT_PRIVATE_KEY_FILE) is not set"),
     ({"COZE_JWT_CLIENT_ID": "1", "COZE_JWT_PUBLIC_KEY_ID": "k", "COZE_JWT_PRIVATE_KEY": "-----BEGIN nonsense"},
      "COZE_JWT_PRIVATE_KEY is not usable"),
     ({"COZE_JWT_CLIENT_ID": "1", "COZE_JWT_PUBLIC_KEY_ID": "k", "COZE_JWT_PRIVATE_KEY_FILE": "/nonexistent/coze.pem"},
      "COZE_JWT_PRIVATE_KEY_FILE cannot be read"),
     ({"COZE_JWT_CLIENT_ID": "1", "COZE_JWT_PUBLIC_KEY_ID": "k", "COZE_JWT_PRIVATE_KEY": PRIVATE_KEY,
       "COZE_API_TOKEN": "pat_x"}, "COZE_API_TOKEN and a Coze JWT app"),
     ({"COZE_JWT_CLIENT_ID": "1", "COZE_JWT_PUBLIC_KEY_ID": "k", "COZE_JWT_PRIVATE_KEY": PRIVATE_KEY,
       "COZE_JWT_PRIVATE_KEY_FILE": "/x.pem"}, "keep one")],
)
def test_jwt_misconfiguration_names_the_variable(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_values(values)
    assert named in str(caught.value)
    assert "PRIVATE KEY-----" not in str(caught.value)


# ------------------------------------------------------------------------------------ tokens over time


async def until_expired(fake: FakeCoze, token: str) -> None:
    """Wait until the fake's clock has passed ``token``'s expiry (a deadline, not a margin)."""
    _, expires_in = fake.access_tokens[token]
    await asyncio.sleep(max(0.0, expires_in - time.time()) + 0.01)


async def test_short_lived_tokens_are_renewed_before_any_call_uses_an_expired_one(fast_retrier: Retrier) -> None:
    async with FakeCoze(jwt_apps=[APP], access_token_seconds=2) as fake:
        service = jwt_service(fake, fast_retrier, VOICEBRIDGE_ASR="coze,coze-stream", VOICEBRIDGE_TTS="coze-stream")
        results = [(await service.transcribe(AudioClip(data=TONE))).text,
                   (await service.transcribe(AudioClip(data=TONE), asr="coze-stream")).text]
        first = fake.token_requests[0].access_token
        assert first is not None
        await until_expired(fake, first)  # mid-run: the first token is now dead on the server
        results += [(await service.transcribe(AudioClip(data=TONE))).text,
                    (await service.transcribe(AudioClip(data=TONE), asr="coze-stream")).text]
        speech = await service.synthesize("Renewed.", SynthesizeOptions(format=AudioFormat.PCM))
        await service.aclose()
    assert results == ["tone 440 hz 1.0 s"] * 4 and speech.data
    assert fake.token_uses() and set(fake.token_uses()) == {"valid"}  # never an expired one, REST or WS
    assert [call.code for call in fake.rest_calls] == [0] * len(fake.rest_calls)  # no 4100 was needed
    assert len(fake.token_requests) >= 2 and all(request.status == 200 for request in fake.token_requests)
    assert {call.token for call in fake.rest_calls[-1:]} | {session.token for session in fake.ws_sessions[-1:]} != {first}


@pytest.mark.parametrize("ws_auth_failure", ["http401", "error_event"])
async def test_a_revoked_token_gets_one_fresh_token_and_one_retry(ws_auth_failure: str, fast_retrier: Retrier) -> None:
    async with FakeCoze(jwt_apps=[APP], ws_auth_failure=ws_auth_failure) as fake:  # type: ignore[arg-type]
        service = jwt_service(fake, fast_retrier)
        await service.transcribe(AudioClip(data=TONE))
        fake.revoke_access_tokens()
        rest = await service.transcribe(AudioClip(data=TONE))
        fake.revoke_access_tokens()
        ws = await service.transcribe(AudioClip(data=TONE), asr="coze-stream")
        await service.aclose()
    assert (rest.text, ws.text) == ("tone 440 hz 1.0 s", "tone 440 hz 1.0 s")
    assert len(fake.token_requests) == 3  # the first token, then one per revocation
    assert [call.code for call in fake.calls_to("transcriptions")] == [0, 4100, 0]
    assert [session.token_state for session in fake.sessions_to("ws_transcriptions")] == ["revoked", "valid"]
    assert service.credentials.problem() is None


async def test_an_app_whose_fresh_token_is_refused_too_fails_once_and_says_why(fast_retrier: Retrier,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    async with FakeCoze(jwt_apps=[APP]) as fake:
        service = jwt_service(fake, fast_retrier)
        fake.refused_apps.add(APP.client_id)
        failures = []
        for _ in range(2):
            with pytest.raises(SpeechError) as refused:
                await service.transcribe(AudioClip(data=TONE))
            failures.append(refused.value)
        problem = service.credentials.problem()
        fake.refused_apps.clear()
        await service.transcribe(AudioClip(data=TONE))
        recovered = service.credentials.problem()
        await service.aclose()
    assert refused.value.kind is ErrorKind.AUTH and refused.value.code == 4100
    assert len(fake.calls_to("transcriptions")) == 2 + 1 + 1  # one retry with a fresh token, then none
    assert problem == ("coze refused the credentials (COZE_JWT_CLIENT_ID / COZE_JWT_PRIVATE_KEY / COZE_JWT_PUBLIC_KEY_ID): "
                       "expired, revoked, or for the other region (coze.cn vs coze.com) "
                       f"[code 4100 logid {failures[0].logid}]")
    assert recovered is None
    refusals = [record for record in caplog.records if "refused the credentials" in record.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR  # one line until a call succeeds again


async def test_a_token_endpoint_that_is_not_coze_is_named(fast_retrier: Retrier) -> None:
    async with FakeCoze(jwt_apps=[APP]) as fake:
        service = jwt_service(fake, fast_retrier, COZE_API_BASE=f"{fake.base_url}/wrong")
        with pytest.raises(SpeechError) as failure:
            await service.transcribe(AudioClip(data=TONE))
        await service.aclose()
    assert "/wrong/api/permission/oauth2/token answered HTTP 404" in str(failure.value) and "COZE_API_BASE" in str(failure.value)


async def test_static_tokens_are_not_retried_and_raise_the_alarm(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        values = {"COZE_API_TOKEN": "pat_expired", "COZE_API_BASE": fake.base_url, "COZE_WS_BASE": fake.ws_base_url}
        service = SpeechService.from_settings(Settings.from_values(values).speech, retrier=fast_retrier)
        with pytest.raises(SpeechError):
            await service.transcribe(AudioClip(data=TONE))
        problem = service.credentials.problem()
        await service.aclose()
    assert len(fake.calls_to("transcriptions")) == 1
    assert problem is not None and problem.startswith("coze refused the credentials (COZE_API_TOKEN): expired, revoked, "
                                                      "or for the other region (coze.cn vs coze.com)")
    assert "pat_expired" not in problem


# ------------------------------------------------------------------------------------ the renewal schedule, at a clock the test moves


class TokenEndpoint:
    """Coze's token endpoint (spec §1.3) as an httpx transport: each request gets a fresh token
    expiring ``lifetime`` seconds after the test's clock (``expires_in`` is an absolute Unix time),
    or the next of the scripted ``answers``."""

    def __init__(self, now: float, lifetime: int = 3600) -> None:
        self.now = now
        self.lifetime = lifetime
        self.answers: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def clock(self) -> float:
        return self.now

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await asyncio.sleep(0)  # as a network answer would, let other callers run meanwhile
        if self.answers:
            return self.answers.pop(0)
        return httpx.Response(200, json={"access_token": f"czs_{len(self.requests)}",
                                         "expires_in": int(self.now) + self.lifetime, "token_type": "Bearer"})

    def app(self, **options: float) -> JwtApp:
        return JwtApp(APP.client_id, PRIVATE_KEY, APP.public_key_id, "https://api.coze.cn",
                      transport=httpx.MockTransport(self.handle), clock=self.clock, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("lifetime", "renewed_after"), [
    (3600, 3300.0),  # five minutes before expiry…
    (100, 80.0),  # …or a fifth of a short lifetime
    (3660, 3360.0),  # a minute of clock difference is still believed
    (3661, 3300.0),  # more is not: the requested hour counts, from our clock
    (1, 0.8),  # a token for one second is still believed
    (0, 3300.0),  # "expires" now: our clock is ahead of Coze's
])
async def test_tokens_are_renewed_ahead_of_expiry_by_our_clock(lifetime: int, renewed_after: float) -> None:
    endpoint = TokenEndpoint(now=1_700_000_000.0, lifetime=lifetime)
    app = endpoint.app()
    start = endpoint.now
    first = await app.token()
    endpoint.now = start + renewed_after - 0.001
    assert await app.token() == first and len(endpoint.requests) == 1
    endpoint.now = start + renewed_after
    assert await app.token() != first and len(endpoint.requests) == 2
    await app.aclose()
    body = json.loads(endpoint.requests[0].content)
    assert body == {"duration_seconds": 3600, "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    assert str(endpoint.requests[0].url) == "https://api.coze.cn/api/permission/oauth2/token"


async def test_a_refused_token_is_replaced_once_and_its_replacement_is_not_retried_until_taken() -> None:
    endpoint = TokenEndpoint(now=1_700_000_000.0)
    app = endpoint.app()
    first, *others = await asyncio.gather(*(app.token() for _ in range(3)))
    assert others == [first, first] and len(endpoint.requests) == 1  # callers at once share one minted token
    assert app.rejected("czs_unknown") and await app.token() == first  # an older token: the current one stays
    assert app.rejected(first)  # worth one more try…
    fresh = await app.token()
    assert fresh != first and len(endpoint.requests) == 2
    assert not app.rejected(fresh)  # …but a fresh token refused as well means the app itself is refused
    assert await app.token() == fresh  # and it is not minted again in a loop
    app.accepted(fresh)  # once Coze took it, a later refusal is an ordinary expiry again
    assert app.rejected(fresh) and await app.token() != fresh
    app.accepted(await app.token())
    endpoint.now += 4000  # an ordinary renewal later on…
    renewed = await app.token()
    assert app.rejected(renewed)  # …is an ordinary token again: worth a retry when refused
    await app.aclose()
    assert await StaticToken("pat_x").token() == "pat_x" and not StaticToken("pat_x").rejected("pat_x")


@pytest.mark.parametrize(("answer", "kind", "retryable", "words"), [
    (httpx.Response(502, text="<html>bad gateway</html>", headers={"X-Tt-Logid": "20261203gw"}), ErrorKind.SERVER, True,
     "answered HTTP 502 without JSON"),
    (httpx.Response(503, json={"access_token": "czs_x", "expires_in": 1}), ErrorKind.SERVER, True, "no access token"),
    (httpx.Response(500, text="oops"), ErrorKind.SERVER, True, "answered HTTP 500 without JSON"),
    (httpx.Response(499, text="closed"), ErrorKind.INVALID_INPUT, False, "answered HTTP 499 without JSON"),
    (httpx.Response(404, text="not found"), ErrorKind.INVALID_INPUT, False, "answered HTTP 404 without JSON"),
    (httpx.Response(401, json={"error_code": "invalid_client", "error_message": "kid names no public key", "error": "x"},
                    headers={"X-Tt-Logid": "20261203token"}),
     ErrorKind.AUTH, False, "token request: kid names no public key"),
    (httpx.Response(500, json={"error_code": "internal_error"}), ErrorKind.SERVER, True, "token request: internal_error"),
    (httpx.Response(200, json={"code": 4100, "msg": "token expired"}), ErrorKind.AUTH, False, "token request: token expired"),
    (httpx.Response(200, json={"access_token": "", "expires_in": 1}), ErrorKind.AUTH, False, "no access token"),
    (httpx.Response(200, json={"access_token": "czs_x", "expires_in": "soon"}), ErrorKind.AUTH, False, "no access token"),
])
async def test_token_endpoint_failures_are_classified(answer: httpx.Response, kind: ErrorKind, retryable: bool,
                                                      words: str) -> None:
    endpoint = TokenEndpoint(now=1_700_000_000.0)
    endpoint.answers.append(answer)
    app = endpoint.app()
    with pytest.raises(SpeechError) as failure:
        await app.token()
    await app.aclose()
    assert (failure.value.kind, failure.value.retryable, failure.value.provider) == (kind, retryable, "coze")
    assert words in str(failure.value)
    body = answer.json() if "json" in answer.headers.get("content-type", "") else {}
    assert failure.value.code == (body.get("error_code") or body.get("code") or answer.status_code)
    assert failure.value.logid == answer.headers.get("x-tt-logid")  # what Coze's support asks for


async def test_a_token_endpoint_that_does_not_answer_or_cannot_be_reached_is_a_transient_failure() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    app = JwtApp(APP.client_id, PRIVATE_KEY, APP.public_key_id, f"http://127.0.0.1:{port}", timeout=0.2)
    async with asyncio.timeout(30):  # a deadline for a client without a timeout, not a margin
        with pytest.raises(SpeechError) as silence:
            await app.token()
    await app.aclose()
    listener.close()
    await listener.wait_closed()
    unreachable = JwtApp(APP.client_id, PRIVATE_KEY, APP.public_key_id, f"http://127.0.0.1:{port}")
    with pytest.raises(SpeechError) as refused:
        await unreachable.token()
    await unreachable.aclose()
    assert (silence.value.kind, silence.value.provider, silence.value.retryable) == (ErrorKind.TIMEOUT, "coze", True)
    assert "the Coze token endpoint did not answer in time" in str(silence.value)
    assert (refused.value.kind, refused.value.provider) == (ErrorKind.CONNECTIVITY, "coze")
    assert "cannot reach the Coze token endpoint: ConnectError" in str(refused.value)
