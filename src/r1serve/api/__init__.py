"""HTTP layer: FastAPI app factory, routes, wire schemas, SSE."""
