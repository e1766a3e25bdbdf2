# The paper-scale comparison: a character-level GPT on Tiny Shakespeare. Every MLP variant uses exactly
# these settings; config/<variant>.py only sets mlp.
dataset = "shakespeare_char"
out_dir = "out/{mlp}-s{seed}"

n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
dropout = 0.2

# One optimizer step trains on gradient_accumulation_steps * batch_size = 64 sequences of 256 characters.
# With N processes, gradient_accumulation_steps must be a multiple of N, e.g. for 8 GPUs:
# --gradient_accumulation_steps=8 --batch_size=8.
batch_size = 64
gradient_accumulation_steps = 1

learning_rate = 1e-3
min_lr = 1e-4
beta2 = 0.99
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 100
max_iters = 34300
lr_decay_iters = 34300

# The dynActivation paper's abstract reports validation perplexity at steps 5620 and 34300, so both
# steps are evaluated and keep a checkpoint.
eval_steps = [5620, 34300]
eval_interval = 250
eval_tokens = 0  # the whole validation split: 435 windows of 256 characters
log_interval = 50
