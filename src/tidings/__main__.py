from __future__ import annotations

from tidings.cli import main

raise SystemExit(main())
