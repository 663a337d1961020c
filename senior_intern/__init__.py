"""Senior Intern: local LoRA fine-tuning of language models on your own code and data."""

__version__ = "0.1.0"
