"""``tidings plan``: a capacity planner fed by the project's own benchmarks.

Pure calculation, in small modules: ``workload`` (what the product does: users, events, fan-out, retention),
``units`` (what one core of each role does, measured by ``tidings bench`` and shipped as data), ``bench``
(the same unit costs read from a result file of the user's own run), ``capacity`` (workload x units ->
processes, store, broker and bandwidth), ``costs`` (a price table the user may override -> a monthly cost),
``render`` (a table or JSON) and ``command`` (the command line). Nothing here opens a socket or reads a clock.
"""

from __future__ import annotations

from tidings.plan.command import main

__all__ = ["main"]
