"""Pure core: no asyncio, no sockets, no wall clock. Imports nothing of ours but ``tidings.errors``."""
