"""Engines behind one small interface: `vllm` (default, production) and `simulated`."""
