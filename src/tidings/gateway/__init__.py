"""The gateway: thin I/O shells (``websocket.py`` on ASGI, ``listener.py`` on a plain asyncio transport,
``sse.py``) around one serve loop (``serve.py``) that drives the sans-I/O ``core.connection`` per connection."""
