"""The Wake server: OpenAI-compatible chat on vLLM, every exchange logged to Redis off the request path."""
