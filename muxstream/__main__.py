"""``python -m muxstream``: the same as the ``muxstream`` command."""

import sys

from ._cli import main

sys.exit(main())
