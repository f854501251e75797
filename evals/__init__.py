"""Benchmarks run against a live FaceLLM server through its OpenAI API (`facellm-eval`)."""
