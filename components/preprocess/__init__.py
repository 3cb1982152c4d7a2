"""The preprocess stage: the train split's normalization statistics at the model's input size (stage)."""
