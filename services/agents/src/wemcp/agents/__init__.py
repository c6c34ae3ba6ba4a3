"""WeMcp agents service: agents, model providers and the OpenAI-compatible tool loop."""
