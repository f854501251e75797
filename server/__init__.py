"""FaceLLM Serve's HTTP layer: an OpenAI-compatible FastAPI app in front of a model Engine."""
