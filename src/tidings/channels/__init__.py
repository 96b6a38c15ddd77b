"""Channel adapters: send one message to one target through a provider (Web Push, email, webhook, FCM).

``base`` holds the interface the sender role uses; ``egress`` the SSRF guard every HTTP channel connects through.
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
