"""Sampling completions from a policy (KV-cache loop), next-token choice, KV cache, benchmark."""
