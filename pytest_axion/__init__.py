"""pytest-axion: performance conformance testing of CPU LLM inference with llama.cpp."""

__version__ = "0.1.0"
