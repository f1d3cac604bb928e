"""
Code shared by two or more of the sb3_natgrad algorithms. ``relaxations`` and ``control_variate`` are aliases of
KFRELAX's own modules (:mod:`sb3_natgrad.kfrelax.relaxations`, :mod:`sb3_natgrad.kfrelax.control_variate`).
"""
