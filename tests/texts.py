"""Varied inputs: lengths from one word to past the model limit, unicode, punctuation, numbers."""

TEXTS = [
    "hello",
    "What is deep learning?",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Ünïcödé téxt with àccents, emojis 🙂 and CJK 深度学习 mixed in.",
    "Numbers 3.14159, dates 2024-01-01, and symbols #@!$%^&*() in one line.",
    " ".join(["A longer passage about retrieval augmented generation and rerankers."] * 12),
    "short",
]
