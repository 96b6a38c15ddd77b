"""End-to-end tests: real ``tidings serve`` processes over real sockets."""
