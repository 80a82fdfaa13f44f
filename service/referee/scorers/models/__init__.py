"""Scorers backed by a model's weights: sequence-classification reward models
(``classifier``), process reward models (``prm``), embedding and lexical similarity
(``similarity``) and causal-LM likelihood rewards (``likelihood``). ``_hf`` loads models
and tokenizers (hub id, directory, GGUF, package path); ``_model`` is their shared base:
tokenising before queueing, length-aware batching, one forward at a time per model.
torch and transformers load only when one of these kinds is configured."""
