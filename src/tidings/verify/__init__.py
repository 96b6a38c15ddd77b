"""``tidings verify``: the no-loss check a user runs against their own deployment (docs/reliability.md).

``ledger`` is the pure accounting (what was accepted against what arrived), ``run`` drives producers, live
clients and the fault command through the Python SDK, ``command`` is the command line.
"""
