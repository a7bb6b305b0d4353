"""The HTTP service: FastAPI routes over the engine and the registry (contract: API.md)."""
