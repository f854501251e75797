"""The benchmark: engine-only ceiling, HTTP floor, this server and vLLM's server, side by side
(`python -m loadtests.bench`; cli.py tells the whole story), and the smaller benches beside it
(`confidence`, `front`)."""
