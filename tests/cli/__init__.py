"""The `tidings` command line, run as a user runs it: through subprocesses."""
