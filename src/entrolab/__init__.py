"""entrolab: RL fine-tuning of language models with exploration as a first-class concern."""

__version__ = "0.1.0"
