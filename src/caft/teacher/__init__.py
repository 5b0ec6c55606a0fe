"""Teacher chain-of-thought traces: prompts, a crash-safe content-addressed cache, and four backends
(OpenAI-compatible API, local transformers model, published traces, the synthetic oracle)."""
