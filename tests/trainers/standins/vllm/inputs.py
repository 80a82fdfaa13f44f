"""Stand-in for ``vllm.inputs`` (see the package docstring)."""

TokensPrompt = dict
