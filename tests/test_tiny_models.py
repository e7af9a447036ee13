"""The tiny stand-in models used by the fast tests load with plain transformers."""

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


def test_tiny_models_load(tiny_encoder_dir, tiny_lm_dir):
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=3)
    assert classifier.config.hidden_size == 32
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    assert sum(p.numel() for p in lm.parameters()) < 3_000_000
