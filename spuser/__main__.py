"""`python -m spuser`: the spuser command (spuser.cli)."""

from __future__ import annotations

import sys

from spuser.cli import main

sys.exit(main())
