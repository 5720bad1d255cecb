"""LeRobot's SmolVLA (SmolVLM2-500M-Video-Instruct + action expert) rebuilt offline in plain torch.

LeRobot builds SmolVLA from the hub's SmolVLM2 config, processor and tokenizer, so it cannot be
built without a network. This package reproduces the same modules, shapes, freezing and training
forward with random weights. Facts were read from LeRobot 0.4.4 (``policies/smolvla``) and
transformers 4.57 (``models/smolvlm``, ``models/llama``):

- Vision: SigLIP as patched by SmolVLM (conv patch embedding with bias, learned position embedding
  over ``(image_size / patch)**2`` positions, pre-norm encoder layers with biased q/k/v/out and a
  tanh-GELU MLP, final ``post_layernorm``). transformers runs it with SDPA.
- Connector: pixel shuffle (space to depth) by ``scale_factor``, then one bias-free Linear.
- Text: the first ``num_vlm_layers`` Llama layers (RMSNorm, GQA attention and gated SiLU MLP, no
  biases), the token embedding, the final norm and an untied ``lm_head`` that the loss never uses.
- Expert: a Llama model at ``expert_width_multiplier`` of the text width, same heads and head_dim,
  MLP ``256 * ceil(4 * int(2 * width / 3) / 256)``. LeRobot drops its ``embed_tokens``; it keeps its
  final norm. In ``cross_attn`` mode every layer whose index is not a multiple of
  ``self_attn_every_n_layers`` reads the VLM's keys/values through k/v projections of shape
  ``(kv_heads * head_dim) -> (kv_heads * head_dim)``.
- Attention in the VLM/expert stack is LeRobot's own eager code: fp32 scores of the full
  ``B x heads x Lq x Lk`` matrix, masked with the fp32 minimum, fp32 softmax. RoPE is LeRobot's
  ``apply_rope`` with a fixed base of 10 000 (it ignores the checkpoint's ``rope_theta``).

Checked against LeRobot 0.4.4's own model at a small size with the weights copied across: the same
training loss and gradients, exactly in fp32 and under bf16 autocast with ``attention="eager"``.

- :mod:`.config` (torch-free): ``Config``, the token counts and ``lerobot_args``.
- :mod:`.layers`: the vision tower, connector, Llama layers and the functional attention pieces.
- :mod:`.model`: ``Model`` (the joint VLM/expert forward), ``synthetic_batch`` and ``describe``.

This package imports nothing, so importing it (or its ``config``) does not import torch.
"""
