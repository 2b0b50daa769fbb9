"""`python -m graphmerge ...` (what `torchrun -m graphmerge merge ...` runs on each rank)."""

import sys

from graphmerge.cli import main

if __name__ == "__main__":
    sys.exit(main())
