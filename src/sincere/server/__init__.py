"""The edges that speak HTTP: renderers now, the FastAPI app with the server issue."""
