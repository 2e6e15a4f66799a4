"""`python -m concurrency ...` runs the `lace` command line, e.g. `python -m concurrency report`."""

from concurrency.cli import main

raise SystemExit(main())
