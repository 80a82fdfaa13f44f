"""Example reward functions for the ``python`` scorer; the tests reuse them."""
