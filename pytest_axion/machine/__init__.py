"""What was measured, and where: the model file, the machine, its cores and its environment."""
