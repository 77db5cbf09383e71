"""`python -m wackatrl`: the wackatrl command (wackatrl.cli)."""

from __future__ import annotations

import sys

from wackatrl.cli import main

sys.exit(main())
