"""What measures: the records every engine returns, the Engine interface, and the llama.cpp worker."""
