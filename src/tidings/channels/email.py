"""Email over SMTP (aiosmtplib): one multipart/alternative mail (plain text + HTML) per message.

The server is configured by URL: ``smtp://user:pass@host:port`` (plain, upgraded with STARTTLS when the server
offers it; ``?starttls=true`` requires it), ``smtps://...`` (implicit TLS, port 465 by default); ``?ehlo=name`` sets the
EHLO name (default: the machine's FQDN). The password is
kept out of ``repr`` and masked out of every Outcome detail. The SMTP host is the operator's, not a user's, so
it does not go through the egress guard.

The parts are rendered from Jinja2 templates (see :mod:`tidings.channels.mail_templates` for the names, the
defaults and the context; HTML is autoescaped, the environment sandboxed). A template that raises, or a mail
over ``max_bytes``, is ``failed`` with a detail naming the problem. Headers: ``Message-ID`` derived from
message.key (the same on every retry: a hint for deduplication), ``List-Unsubscribe`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) when the target has an unsubscribe URL.
Answers: accepted = sent; SMTP 4xx = retry; 550/551/553 refusing the recipient = gone (unknown mailbox); other
5xx = failed; connection errors and timeouts = retry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from tidings.channels.base import ChannelName, EmailTarget, Message, Outcome, bounded
from tidings.channels.mail_templates import DEFAULTS, PARTS, candidates

GONE_CODES = (550, 551, 553)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool | None = None  # None: when the server offers it
    timeout: float = 30.0
    local_hostname: str | None = None  # the EHLO name; None: the machine's FQDN

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("the SMTP URL must be smtp://host[:port] or smtps://host[:port]")
        query = parse_qs(parts.query)
        starttls = query.get("starttls", [""])[0].lower() in ("1", "true", "yes")
        ehlo = query.get("ehlo", [""])[0] or None
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit,
            start_tls=False if implicit else (True if starttls else None),
            timeout=timeout,
            local_hostname=ehlo,
        )


class TemplateProblem(Exception):
    """A template is missing, raised, or rendered a mail over the size limit."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class MailRenderer:
    """Renders the three parts of a message; ``loader`` (the operator's templates) wins over the defaults."""

    def __init__(self, loader: jinja2.BaseLoader | None = None, max_bytes: int = 512 * 1024) -> None:
        loaders: list[jinja2.BaseLoader] = [loader] if loader else []
        self._env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader([*loaders, jinja2.DictLoader(DEFAULTS)]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.ChainableUndefined,
            keep_trailing_newline=True,
        )
        self.max_bytes = max_bytes

    def render(self, message: Message, target: EmailTarget) -> Rendered:
        digest = len(message.notifications) > 1
        kind = "" if digest else str(message.notifications[0].get("type") or "notification")
        context: dict[str, Any] = {
            "app": message.app,
            "user": message.user,
            "recipient": {"name": target.name, "address": target.address, "locale": target.locale},
            "notification": message.notifications[0],
            "notifications": list(message.notifications),
            "count": len(message.notifications),
            "unsubscribe_url": target.unsubscribe_url,
        }
        out: list[str] = []
        for part in PARTS:
            names = candidates(message.app, kind, part)
            try:
                template = self._env.select_template(names)
            except jinja2.TemplateError as exc:
                raise TemplateProblem(f"no template among {names}: {exc}") from None
            try:
                out.append(template.render(context))
            except Exception as exc:
                raise TemplateProblem(
                    f"template {template.name} failed: {type(exc).__name__}: {exc}"
                ) from None
        subject, text, html = out
        size = len(text.encode()) + len(html.encode())
        if size > self.max_bytes:
            raise TemplateProblem(f"the rendered mail is {size} bytes, over the limit of {self.max_bytes}")
        return Rendered(" ".join(subject.split())[:250], text, html)


def message_id(key: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tidings.invalid"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def build_mail(message: Message, target: EmailTarget, rendered: Rendered, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = (
        Address(display_name=target.name, addr_spec=target.address) if target.name else target.address
    )
    mail["Subject"] = rendered.subject
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = message_id(message.key, sender)
    mail["Auto-Submitted"] = "auto-generated"
    if target.unsubscribe_url:
        mail["List-Unsubscribe"] = f"<{target.unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(rendered.text)
    mail.add_alternative(rendered.html, subtype="html")
    return mail


def refusal(code: int, text: str, recipient: bool, masked: tuple[str, ...]) -> Outcome:
    detail = bounded(f"SMTP {code}: {text}", masked)
    if 400 <= code < 500:
        return Outcome("retry", code, detail)
    if recipient and code in GONE_CODES:
        return Outcome("gone", code, detail)
    return Outcome("failed", code, detail)


class EmailChannel:
    """Sends messages whose target is an :class:`EmailTarget`, from ``sender`` (e.g. ``Ada <a@example.org>``)."""

    name: ChannelName = "email"

    def __init__(self, smtp: SmtpConfig | str, sender: str, renderer: MailRenderer | None = None) -> None:
        self._smtp = SmtpConfig.from_url(smtp) if isinstance(smtp, str) else smtp
        self._sender = sender
        self._renderer = renderer or MailRenderer()
        self._masked = tuple(s for s in (self._smtp.password,) if s)

    async def send(self, message: Message) -> Outcome:
        target = message.target
        if not isinstance(target, EmailTarget):
            raise TypeError(f"email channel got a {type(target).__name__}")
        try:
            mail = build_mail(message, target, self._renderer.render(message, target), self._sender)
        except TemplateProblem as exc:
            return Outcome("failed", detail=bounded(str(exc), self._masked))
        except (ValueError, TypeError, MessageError) as exc:  # e.g. an address the email package refuses
            return Outcome("failed", detail=bounded(f"cannot build the mail: {exc}", self._masked))
        return await self._deliver(mail, target.address)

    async def _deliver(self, mail: EmailMessage, address: str) -> Outcome:
        smtp = self._smtp
        try:
            _, answer = await aiosmtplib.send(
                mail,
                sender=parseaddr(self._sender)[1] or self._sender,
                recipients=[address],
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                use_tls=smtp.use_tls,
                start_tls=smtp.start_tls,
                timeout=smtp.timeout,
                local_hostname=smtp.local_hostname,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return refusal(first.code, first.message, True, self._masked)
        except aiosmtplib.SMTPRecipientRefused as exc:
            return refusal(exc.code, exc.message, True, self._masked)
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
        ) as exc:
            return Outcome("retry", detail=bounded(f"{type(exc).__name__}: {exc}", self._masked))
        except aiosmtplib.SMTPResponseException as exc:
            return refusal(exc.code, exc.message, False, self._masked)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Outcome("retry", detail=bounded(f"{type(exc).__name__}: {exc}", self._masked))
        return Outcome("sent", 250, bounded(answer, self._masked))

    async def close(self) -> None:
        """Nothing pooled: each send opens and closes its own SMTP session."""
