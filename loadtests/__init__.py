"""Load tests (locust) and the side-by-side benchmark against vLLM's own server."""
