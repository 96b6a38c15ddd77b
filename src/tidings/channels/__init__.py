"""Channel adapters: send one message to one target through a provider (Web Push, email, webhook, FCM).

``base`` holds the interface the sender role uses; ``egress`` the SSRF guard every HTTP channel connects through.
Wiring, one instance per process and channel, closed at shutdown::

    policy = EgressPolicy.from_env()                     # TIDINGS_EGRESS_ALLOW
    WebhookChannel(policy)                               # targets carry their own secrets
    WebPushChannel(lambda app: (vapid_private_key_of(app), "mailto:ops@example.org"), policy)
    EmailChannel("smtps://user:pass@smtp.example.org", "Acme <notify@example.org>",
                 MailRenderer(jinja2.FileSystemLoader("templates/email")))
    FcmChannel(service_account_json)                     # needs the 'fcm' extra

``unsubscribe.make_token``/``verify`` make and check the one-click URL tokens an EmailTarget points at;
``webhook.new_secret`` and ``webpush.generate_vapid_keys`` make the per-target and per-app secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy checks that every adapter satisfies the Channel protocol
    from tidings.channels.base import Channel
    from tidings.channels.email import EmailChannel
    from tidings.channels.fcm import FcmChannel
    from tidings.channels.webhook import WebhookChannel
    from tidings.channels.webpush import WebPushChannel

    def _conforms(a: EmailChannel, b: FcmChannel, c: WebhookChannel, d: WebPushChannel) -> list[Channel]:
        return [a, b, c, d]
