"""`python -m spreadpy`: the same as the `spreadpy` command."""

from spreadpy.cli import main

raise SystemExit(main())
