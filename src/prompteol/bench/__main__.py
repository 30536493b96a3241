"""``python -m prompteol.bench``: the benchmark (``prompteol bench``), or one configuration with ``--worker``."""

import sys

from .harness import main

sys.exit(main())
