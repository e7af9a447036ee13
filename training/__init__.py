"""Training side of supportbot: data sets, base models, fine-tuning, evaluation, registry."""
