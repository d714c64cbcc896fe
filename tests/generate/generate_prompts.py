"""Ten prompts for greedy comparisons with llama.cpp's llama-simple (32 tokens each)."""
PROMPTS = [
    "Hello my name is",
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In 1969, the first humans",
    "A good recipe for pancakes needs",
    "The quick brown fox",
    "Machine learning is a field of",
]
