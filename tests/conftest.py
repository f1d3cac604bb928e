import os
import sys

import torch

# Tests import small reference helpers that live next to them.
sys.path.insert(0, os.path.dirname(__file__))

# Two CPU cores in CI: keep torch from oversubscribing them when pytest-xdist runs two workers.
if os.environ.get("PYTEST_XDIST_WORKER") is not None:
    torch.set_num_threads(1)
