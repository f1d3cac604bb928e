import os
import sys

import torch

# Tests import small reference helpers that live next to them.
sys.path.insert(0, os.path.dirname(__file__))
# ... and a few of the benchmarks' helpers (e.g. kl_bound.LoggedKL), so that both use one copy.
sys.path.insert(1, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))

# Two CPU cores in CI: keep torch from oversubscribing them when pytest-xdist runs two workers.
if os.environ.get("PYTEST_XDIST_WORKER") is not None:
    torch.set_num_threads(1)
