"""promptswap's Python client (httpx, no torch). The HTTP client arrives with the HTTP service."""
