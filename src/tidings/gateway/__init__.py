"""The gateway: thin I/O shells (WebSocket, SSE) that drive ``core.session`` for each connection."""
