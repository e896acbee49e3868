"""`python3 -m hostinglab`: what lab/lab runs."""

import sys

from .cli import main

sys.exit(main())
