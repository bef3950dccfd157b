"""Allow ``python -m labsuite``."""

import sys

from labsuite.cli import main

sys.exit(main())
