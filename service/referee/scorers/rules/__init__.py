"""Rule-based verifiers: math answer equivalence (``math``), exact/regex/choice matching
(``match``), format and JSON-schema checks (``format``), length and repetition penalties
(``length``, ``repetition``), and reward functions named in server config (``python``).
Each module is imported only when a config names its kind (see ``scorers/_registry.py``)."""
