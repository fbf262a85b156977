"""python -m ncagen.card DIR ...: (re)write a build's dataset card."""

import sys

from . import main

sys.exit(main())
