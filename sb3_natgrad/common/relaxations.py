"""
Moved to :mod:`sb3_natgrad.kfrelax.relaxations` (it is KFRELAX's alone). This alias keeps models saved under the old path
(the shipped KFRELAX agents among them) loadable; new code imports the new path.
"""

from sb3_natgrad.kfrelax.relaxations import *  # noqa: F403
