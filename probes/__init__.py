"""What autotune measures: the policy models, the training step, the dataset reader and the probe child."""
