"""Coze credentials: a fixed access token, or an OAuth JWT service app that mints its own.

A JWT app (spec §1.3, as cozepy's ``JWTOAuthApp`` does it) signs an RS256 assertion with its
private key and trades it at ``POST /api/permission/oauth2/token`` for an access token whose
``expires_in`` is an absolute Unix time. Tokens are renewed ahead of that time, so no call is made
with an expired one; a token Coze still rejects (4100) is dropped, and the caller's one retry gets
a fresh one. Personal access tokens last at most 30 days (spec §10.1): a JWT app runs for months.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..logs import redact_also
from .errors import ErrorKind, SpeechError


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (its CA bundle, SSL_CERT_FILE …), built once per process and
    shared by every Coze client: loading the CA bundle costs about 20 ms of CPU, which each new
    httpx client (ASR, TTS, chat, tokens; per service built) would otherwise pay again."""
    return httpx.create_ssl_context()


log = logging.getLogger(__name__)

TOKEN_PATH = "/api/permission/oauth2/token"
JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCESS_TOKEN_SECONDS = 3600  # asked for; Coze allows up to 86399 (spec §1.3)
ASSERTION_SECONDS = 3600  # lifetime of the signed assertion, as cozepy sets it
# Renew this long before expiry: a fifth of the lifetime, at most five minutes.
MAX_RENEW_MARGIN_SECONDS = 300.0


class CozeCredentials(Protocol):
    """Where a Coze client gets the bearer token for its next call."""

    provider_variables: str  # the configuration variables an operator fixes when Coze refuses them

    async def token(self) -> str: ...

    def rejected(self, token: str) -> bool:
        """Coze refused ``token``: forget it. True when the next :meth:`token` is a new one worth
        one more try (a renewable credential, not refused twice in a row)."""
        ...

    def accepted(self, token: str) -> None:
        """Coze took ``token`` (a call got past authentication)."""
        ...

    async def aclose(self) -> None: ...


class StaticToken:
    """A personal or service access token from COZE_API_TOKEN: nothing to renew."""

    provider_variables = "COZE_API_TOKEN"

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    def rejected(self, token: str) -> bool:
        return False

    def accepted(self, token: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """The RSA key of a PEM text (real newlines or the ``\\n`` escapes a one-line .env value
    holds); ValueError when it is none."""
    text = pem.strip().replace("\\n", "\n")
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM private key without a passphrase ({error})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the key is not an RSA key (Coze JWT apps sign with RS256)")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed_assertion(private_key: rsa.RSAPrivateKey, public_key_id: str, client_id: str, audience: str,
                     now: int, lifetime: int = ASSERTION_SECONDS) -> str:
    """An RS256 JWT with the header and claims cozepy's ``JWTOAuthApp._gen_jwt`` makes."""
    header = {"alg": "RS256", "typ": "JWT", "kid": public_key_id}
    claims = {"iss": client_id, "aud": audience, "iat": now, "exp": now + lifetime,
              "jti": f"{now}:{os.urandom(4).hex()}:{os.urandom(8).hex()}"}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


class JwtApp:
    """Access tokens of a Coze OAuth JWT service app, minted on demand and renewed ahead of expiry.

    Only one renewal runs at a time; concurrent callers wait for it. ``clock`` is wall time (Unix
    seconds), the clock ``expires_in`` is given in.
    """

    provider_variables = "COZE_JWT_CLIENT_ID / COZE_JWT_PRIVATE_KEY / COZE_JWT_PUBLIC_KEY_ID"

    def __init__(self, client_id: str, private_key_pem: str, public_key_id: str, api_base: str, *,
                 timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
                 access_token_seconds: int = ACCESS_TOKEN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.public_key_id = public_key_id
        self._private_key = load_private_key(private_key_pem)
        self._audience = urlsplit(api_base).netloc  # the REST host, as cozepy sets `aud`
        self._access_token_seconds = access_token_seconds
        self._clock = clock
        self._client = httpx.AsyncClient(base_url=api_base.rstrip("/"), transport=transport, verify=tls_context(),
                                         timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)))
        self._token: str | None = None
        self._renew_at = 0.0
        self._after_rejection = False  # the next token minted replaces one Coze refused…
        self._retry_token: str | None = None  # …and is that token until Coze takes it; refused too, it is kept
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                await self._mint()
            assert self._token is not None
            return self._token

    def rejected(self, token: str) -> bool:
        if token == self._retry_token:
            return False  # a fresh token refused as well: the app itself is the problem
        if token == self._token:
            self._token, self._renew_at = None, 0.0
            self._after_rejection = True
        return True

    def accepted(self, token: str) -> None:
        if token == self._retry_token:
            self._retry_token = None

    async def _mint(self) -> None:
        now = self._clock()
        assertion = signed_assertion(self._private_key, self.public_key_id, self.client_id, self._audience, int(now))
        body = {"duration_seconds": self._access_token_seconds, "grant_type": JWT_GRANT_TYPE}
        try:
            response = await self._client.post(TOKEN_PATH, json=body, headers={"Authorization": f"Bearer {assertion}"})
        except httpx.TimeoutException as error:
            raise SpeechError(ErrorKind.TIMEOUT, "the Coze token endpoint did not answer in time", provider="coze") from error
        except httpx.HTTPError as error:
            raise SpeechError(ErrorKind.CONNECTIVITY, f"cannot reach the Coze token endpoint: {type(error).__name__}",
                              provider="coze") from error
        logid = response.headers.get("x-tt-logid")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            kind = ErrorKind.SERVER if response.status_code >= 500 else ErrorKind.INVALID_INPUT
            raise SpeechError(kind, f"{response.request.url} answered HTTP {response.status_code} without JSON: "
                                    "is COZE_API_BASE the Coze API?", provider="coze", code=response.status_code,
                              logid=logid, retryable=kind is ErrorKind.SERVER)
        token, expires_at = answer.get("access_token"), answer.get("expires_in")
        if response.status_code != 200 or not isinstance(token, str) or not token or not isinstance(expires_at, int):
            reason = answer.get("error_message") or answer.get("msg") or answer.get("error_code") or "no access token"
            kind = ErrorKind.SERVER if response.status_code >= 500 else ErrorKind.AUTH
            raise SpeechError(kind, f"Coze refused the JWT app's token request: {reason}", provider="coze",
                              code=answer.get("error_code") or answer.get("code") or response.status_code, logid=logid)
        redact_also(token)
        lifetime = expires_at - now
        if not 0 < lifetime <= self._access_token_seconds + 60:
            # expires_in is Coze's wall clock; ours differs by more than the lifetime.
            log.warning("this machine's clock differs from Coze's (token expires_in %s); using the requested lifetime",
                        expires_at)
            lifetime = self._access_token_seconds
        self._token = token
        self._renew_at = now + lifetime - min(MAX_RENEW_MARGIN_SECONDS, lifetime / 5)
        if self._after_rejection:
            self._retry_token, self._after_rejection = token, False
        log.info("Coze access token minted for the JWT app; renewed in %.0f s", self._renew_at - now)

    async def aclose(self) -> None:
        await self._client.aclose()
