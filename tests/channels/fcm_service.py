"""Local stand-ins for Google's OAuth2 token endpoint and the FCM v1 API, over HTTPS with a self-signed cert.

The token endpoint checks the service-account JWT assertion (RS256, signed by the test key; iss, aud and scope) and
hands out an access token; the API checks the bearer token and the v1 message schema, and answers by device
token: ``gone`` 404 UNREGISTERED, ``badtoken`` 400 INVALID_ARGUMENT on message.token, ``busy`` 429, ``down``
503, ``badmsg`` 400 INVALID_ARGUMENT (not the token), anything else 200.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_AUD = "https://oauth2.googleapis.com/token"  # google-auth always names Google's endpoint as aud


def self_signed(tmp: Path, dns_name: str | None = None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a certificate naming 127.0.0.1, or ``dns_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(dns_name)] if dns_name else [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def service_account(token_uri: str) -> tuple[dict[str, str], rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "demo-proj",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "fcm@demo-proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    return info, key.public_key()


ANSWERS: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    "gone": (404, {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}, {}),
    "badtoken": (
        400,
        {"status": "INVALID_ARGUMENT", "details": [{"fieldViolations": [{"field": "message.token"}]}]},
        {},
    ),
    "busy": (
        429,
        {"status": "RESOURCE_EXHAUSTED", "details": [{"errorCode": "QUOTA_EXCEEDED"}]},
        {"Retry-After": "20"},
    ),
    "down": (503, {"status": "UNAVAILABLE"}, {}),
    "badmsg": (400, {"status": "INVALID_ARGUMENT", "message": "bad android.ttl"}, {}),
}


@dataclass
class Google:
    public_key: rsa.RSAPublicKey | None = None
    client_email: str = ""
    token_uri: str = ""
    tokens_issued: int = 0
    token_error: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def __call__(self, request: web.Request) -> web.Response:
        if request.path == "/token":
            return await self.token(request)
        if request.path == "/v1/projects/demo-proj/messages:send":
            return await self.send(request)
        return web.Response(status=404)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.token_error:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "Invalid JWT"}, status=400
            )
        try:
            claims = jwt.decode(
                str(form["assertion"]), self.public_key, algorithms=["RS256"], audience=GOOGLE_TOKEN_AUD
            )
        except (jwt.PyJWTError, KeyError) as exc:
            self.problems.append(f"assertion: {exc}")
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self.problems.append("grant_type")
        if claims.get("iss") != self.client_email or claims.get("scope") != SCOPE:
            self.problems.append(f"claims {claims}")
        self.tokens_issued += 1
        return web.json_response({"access_token": f"ya29.t{self.tokens_issued}", "expires_in": 3600})

    async def send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer ya29.t{self.tokens_issued}":
            return web.json_response({"error": {"status": "UNAUTHENTICATED"}}, status=401)
        body = orjson.loads(await request.read())
        message = body["message"]
        self.check(message)
        self.messages.append(message)
        status, error, headers = ANSWERS.get(message["token"], (200, {}, {}))
        if status != 200:
            return web.json_response({"error": {"code": status, **error}}, status=status, headers=headers)
        return web.json_response({"name": "projects/demo-proj/messages/1"})

    def check(self, message: dict[str, Any]) -> None:
        expected = {"token", "notification", "data", "android", "apns"}
        if set(message) - expected or not isinstance(message.get("token"), str):
            self.problems.append(f"fields {sorted(message)}")
        if not all(isinstance(v, str) for v in message["data"].values()):
            self.problems.append("data values must be strings")
        if set(message["notification"]) - {"title", "body"}:
            self.problems.append("notification fields")
        android = message["android"]
        if android["priority"] not in ("HIGH", "NORMAL") or not android["ttl"].endswith("s"):
            self.problems.append("android")
        if message["apns"]["headers"]["apns-priority"] not in ("10", "5"):
            self.problems.append("apns")
