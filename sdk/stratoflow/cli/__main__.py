"""``python -m stratoflow.cli``: the same as the ``stratoflow`` command."""

import sys

from stratoflow.cli import main

sys.exit(main())
