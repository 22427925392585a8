"""``python -m meshrpc``: the same as the ``meshrpc`` command."""

import sys

from meshrpc.cli import main

sys.exit(main())
