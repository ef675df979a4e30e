"""Served deployments: llama.cpp's own server, built and started for a test session, and what it needs."""
