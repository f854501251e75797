"""FaceLLM: model registry, weights, prompts, attribute schema, face detection and engines.

Nothing here imports `server/` or FastAPI; only `model/vllm_*.py` import vLLM, lazily.
"""
