"""``python -m sb3_natgrad``: the ``sb3-natgrad`` command (rl-zoo3's tools with the sb3_natgrad algorithms)."""

import sys

from sb3_natgrad.zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
