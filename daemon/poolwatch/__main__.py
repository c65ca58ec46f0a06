"""`python -m poolwatch`, the same as the `poolwatch` console script."""

from poolwatch.cli import main

raise SystemExit(main())
