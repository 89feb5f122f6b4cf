"""`python -m engine.cli`: the `sparknet` command without the panel."""

import sys

from engine.cli.main import main

sys.exit(main())
