"""Lipschitz statistics of models and data: the numbers the paper's argument rests on (Sections 2 and 4,
Appendix C), measured exactly where they can be and bounded where they cannot."""
