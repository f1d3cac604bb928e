"""Code shared by two or more of the sb3_natgrad algorithms."""
