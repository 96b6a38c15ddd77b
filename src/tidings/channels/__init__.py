"""Channel adapters: send one message to one target through a provider (Web Push, email, webhook, FCM).

``base`` holds the interface the sender role uses; ``egress`` the SSRF guard every HTTP channel connects through.
"""
