"""A real SMTP server for the email tests (aiosmtpd on 127.0.0.1), with scripted refusals and AUTH."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "mailer", "pa55-w0rd-Zq9!"


@dataclass
class Mailbox:
    """Mails received; RCPT answers by local part: ``unknown*`` 550, ``busy*`` 451, ``full*`` 552."""

    mails: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    data_answer: str = "250 OK queued"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        local = address.split("@")[0]
        for prefix, answer in (
            ("unknown", "550 5.1.1 no such user"),
            ("busy", "451 4.3.0 try later"),
            ("full", "552 5.2.2 mailbox full"),
        ):
            if local.startswith(prefix):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        mail = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        return self.data_answer


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server(auth: bool = False) -> Iterator[tuple[int, Mailbox]]:
    mailbox = Mailbox()
    kwargs: dict[str, Any] = {"server_hostname": "smtp.test"}  # no lookup of this machine's FQDN
    if auth:
        kwargs |= {
            "authenticator": authenticate,
            "auth_required": True,
            "auth_require_tls": False,
            "auth_exclude_mechanism": ["LOGIN"],
        }
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    try:
        yield controller.port, mailbox
    finally:
        controller.stop()
