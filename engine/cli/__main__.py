"""`python -m engine.cli`: the `sparknet` command without the panel."""

import faulthandler
import sys

from engine.cli.main import main

# A crash below Python (a segmentation fault in a library, an abort) prints where it happened: for a detached run
# into its train.log, which then tells why the run failed.
faulthandler.enable()
sys.exit(main())
