"""Execution scorers: run what the policy wrote (programs against tests, SQL against a
database) in a confined sandbox. Kinds here are registered in ``scorers/_registry.py``."""
