"""What is stored: baselines (schema-checked, locked, atomic), this machine's baseline, the refresh."""
