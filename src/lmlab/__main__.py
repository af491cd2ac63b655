"""`python -m lmlab ...` (what `torchrun -m lmlab` runs)."""

import sys

from lmlab.cli import main

sys.exit(main())
