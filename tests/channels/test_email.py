"""Email through a real local SMTP server (aiosmtpd): MIME structure, templates, headers, refusals."""

from __future__ import annotations

import logging

import jinja2
import pytest

from tidings.channels.base import EmailTarget
from tidings.channels.email import EmailChannel, MailRenderer, SmtpConfig, message_id

from .smtp_server import PASSWORD, USER, smtp_server
from .support import NOTE, message

SENDER = "Tidings <notify@example.org>"
UNSUB = "https://example.org/unsubscribe?t=u1.abc.def"


def url(port: int) -> str:
    """The test server's URL; the EHLO name is given so no lookup of this machine's FQDN is made."""
    return f"smtp://127.0.0.1:{port}?ehlo=tidings.test"


def target(address: str = "bob@example.org", unsubscribe_url: str = UNSUB) -> EmailTarget:
    return EmailTarget(address, "Bob B", "en", unsubscribe_url)


def parts(mail: object) -> dict[str, str]:
    assert hasattr(mail, "iter_parts")
    return {p.get_content_type(): p.get_content() for p in mail.iter_parts()}


async def test_single_notification_mail() -> None:
    with smtp_server() as (port, box):
        channel = EmailChannel(url(port), SENDER)
        outcome = await channel.send(message("email", target(), key="k1"))
        await channel.close()
    assert outcome.result == "sent"
    assert outcome.status == 250
    [mail] = box.mails
    assert box.envelopes == [("notify@example.org", ["bob@example.org"])]
    assert mail.get_content_type() == "multipart/alternative"
    body = parts(mail)
    assert list(body) == ["text/plain", "text/html"]
    assert "Ada commented on your post" in body["text/plain"]
    assert "Nice work!" in body["text/plain"]
    assert "<h1>Ada commented on your post</h1>" in body["text/html"]
    assert mail["Subject"] == "Ada commented on your post"
    assert mail["To"] == "Bob B <bob@example.org>"
    assert mail["List-Unsubscribe"] == f"<{UNSUB}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"] == message_id("k1", SENDER)
    assert mail["Message-ID"].endswith("@example.org>")


async def test_digest_holds_exactly_the_given_notifications() -> None:
    notes = [{**NOTE, "id": f"n{i}", "data": {"title": f"Title {i}", "body": f"Body {i}"}} for i in range(3)]
    with smtp_server() as (port, box):
        channel = EmailChannel(url(port), SENDER)
        outcome = await channel.send(message("email", target(unsubscribe_url=""), *notes))
    assert outcome.result == "sent"
    [mail] = box.mails
    body = parts(mail)
    assert mail["Subject"] == "3 new notifications"
    for text in (body["text/plain"], body["text/html"]):
        assert [i for i in range(5) if f"Title {i}: Body {i}" in text] == [0, 1, 2]
    assert body["text/html"].count("<li>") == 3
    assert "List-Unsubscribe" not in mail


async def test_hostile_text_is_escaped_in_html_only() -> None:
    hostile = {
        **NOTE,
        "data": {"title": "<script>alert(1)</script>", "body": '"><img src=x onerror=alert(1)>'},
    }
    with smtp_server() as (port, box):
        await EmailChannel(url(port), SENDER).send(message("email", target(), hostile))
    body = parts(box.mails[0])
    assert "<script>" not in body["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body["text/html"]
    assert "<img" not in body["text/html"]
    assert "<script>alert(1)</script>" in body["text/plain"]


async def test_override_loader_per_app_and_type() -> None:
    loader = jinja2.DictLoader(
        {
            "demo/comment.subject.txt": "Custom: {{ notification.data.title }}",
            "comment.html": "<p>{{ recipient.name }} / {{ notification.data.body }}</p>",
        }
    )
    with smtp_server() as (port, box):
        channel = EmailChannel(url(port), SENDER, MailRenderer(loader))
        await channel.send(message("email", target()))
    mail = box.mails[0]
    assert mail["Subject"] == "Custom: Ada commented on your post"
    assert parts(mail)["text/html"].strip() == "<p>Bob B / Nice work!</p>"
    assert "Nice work!" in parts(mail)["text/plain"]  # the default text part


async def test_raising_or_oversized_template_fails_clearly() -> None:
    loader = jinja2.DictLoader({"comment.txt": "{{ 1 // 0 }}"})
    with smtp_server() as (port, box):
        broken = await EmailChannel(url(port), SENDER, MailRenderer(loader)).send(message("email", target()))
        big = await EmailChannel(url(port), SENDER, MailRenderer(max_bytes=200)).send(
            message("email", target())
        )
    assert broken.result == "failed"
    assert "comment.txt" in broken.detail
    assert "ZeroDivisionError" in broken.detail
    assert big.result == "failed"
    assert "over the limit of 200" in big.detail
    assert box.mails == []


@pytest.mark.parametrize(
    ("local", "result", "status"),
    [("unknown", "gone", 550), ("busy", "retry", 451), ("full", "failed", 552)],
)
async def test_recipient_refusals(local: str, result: str, status: int) -> None:
    with smtp_server() as (port, _):
        outcome = await EmailChannel(url(port), SENDER).send(message("email", target(f"{local}@example.org")))
    assert (outcome.result, outcome.status) == (result, status)


async def test_data_refusal_and_unreachable_server() -> None:
    with smtp_server() as (port, box):
        box.data_answer = "554 5.7.1 rejected as spam"
        rejected = await EmailChannel(url(port), SENDER).send(message("email", target()))
    down = await EmailChannel(SmtpConfig("127.0.0.1", port, timeout=2, local_hostname="t.test"), SENDER).send(
        message("email", target())
    )
    assert (rejected.result, rejected.status) == ("failed", 554)
    assert down.result == "retry"


def test_smtp_url() -> None:
    plain = SmtpConfig.from_url("smtp://u%40x:p%3Ass@mail.example.org:2525?starttls=true")
    assert (plain.host, plain.port, plain.username, plain.password) == (
        "mail.example.org",
        2525,
        "u@x",
        "p:ss",
    )
    assert (plain.use_tls, plain.start_tls) == (False, True)
    implicit = SmtpConfig.from_url("smtps://mail.example.org")
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, False)
    assert SmtpConfig.from_url("smtp://h").start_tls is None
    assert SmtpConfig.from_url("smtp://h?ehlo=mx.example.org").local_hostname == "mx.example.org"
    assert "p:ss" not in repr(plain)
    with pytest.raises(ValueError, match="SMTP URL"):
        SmtpConfig.from_url("http://h")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_auth_and_password_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server(auth=True) as (port, box):
        good = await EmailChannel(
            f"smtp://{USER}:{PASSWORD.replace('!', '%21')}@127.0.0.1:{port}?ehlo=tidings.test", SENDER
        ).send(message("email", target()))
        wrong = "Wr0ng-" + PASSWORD
        bad = await EmailChannel(
            SmtpConfig("127.0.0.1", port, USER, wrong, local_hostname="t.test"), SENDER
        ).send(message("email", target()))
        unknown = await EmailChannel(
            SmtpConfig("127.0.0.1", port, USER, PASSWORD, local_hostname="t.test"), SENDER
        ).send(message("email", target("unknown@example.org")))
    down = await EmailChannel(
        SmtpConfig("127.0.0.1", port, USER, PASSWORD, timeout=2, local_hostname="t.test"), SENDER
    ).send(message("email", target()))
    assert good.result == "sent"
    assert len(box.mails) == 1
    assert bad.result == "failed"
    assert bad.status == 535
    assert unknown.result == "gone"
    assert down.result == "retry"
    for outcome in (good, bad, unknown, down):
        assert PASSWORD not in outcome.detail
        assert wrong not in outcome.detail
    assert PASSWORD not in caplog.text
    assert wrong not in caplog.text


def test_template_names_per_app_and_type() -> None:
    from tidings.channels.mail_templates import candidates

    assert candidates("demo", "comment", "html") == [
        "demo/comment.html",
        "comment.html",
        "demo/single.html",
        "single.html",
    ]
    assert candidates("demo", "digest", "txt") == ["demo/single.txt", "single.txt"]
    assert candidates("../x", "a/b", "txt") == ["single.txt"]
    assert candidates("demo", "", "subject.txt") == ["demo/digest.subject.txt", "digest.subject.txt"]
