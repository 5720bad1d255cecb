"""LeRobot's ACT policy rebuilt in plain PyTorch at its real defaults, built offline with random weights.

The module tree and parameter names follow LeRobot's ``ACT`` model (``policy.model`` in LeRobot), so
the parameter count equals LeRobot's ``num_learnable_params`` and a LeRobot ACT state dict (less its
``model.`` prefix) loads into :class:`~probes.policies.act.model.Model`. The loss is LeRobot's: the
L1 error of the predicted action chunk with padded steps zeroed, averaged over every element, plus
``kl_weight`` times the KL divergence of the VAE posterior from a standard normal (summed over the
latent, averaged over the batch). Nothing here downloads weights: the ResNet backbone starts from
random values, which costs exactly the same memory and time as ImageNet weights.

Unlike LeRobot, the backbone and every transformer layer can run under activation checkpointing
(``Model.set_gradient_checkpointing``), which trades a second forward pass for memory.

- :mod:`.config` (torch-free): ``Config`` and ``lerobot_args``.
- :mod:`.layers`: the sine embeddings and the transformer encoder and decoder.
- :mod:`.model`: the backbone, ``Model``, ``synthetic_batch`` and ``describe``.

This package imports nothing, so importing it (or its ``config``) does not import torch.
"""
