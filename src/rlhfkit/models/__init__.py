"""Model loading (HF + peft + dtype/device), chat formatting, generation, and tiny offline test models."""
