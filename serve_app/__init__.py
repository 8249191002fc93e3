"""A production serving stack for large chat models on Ray Serve and vLLM."""
