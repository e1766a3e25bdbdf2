# GPT-2 BPE on TinyStories: a small model for one GPU. A dataset config goes after the variant, because
# the variant files import the whole Tiny Shakespeare setup:
#   python data/prepare.py tinystories
#   torchrun --standalone --nproc_per_node=1 train.py config/dynactglu.py config/tinystories.py
# Every data, model and schedule setting that config/shakespeare_char.py sets is set here too, so
# nothing from the character-level setup carries over.
dataset = "tinystories"
out_dir = "out/tinystories/{mlp}-s{seed}"

n_layer = 8
n_head = 8
n_embd = 512
block_size = 512
dropout = 0.0
bias = False

# One optimizer step trains on batch_size * gradient_accumulation_steps * block_size
# = 32 * 4 * 512 = 65,536 tokens. With N processes, gradient_accumulation_steps must be a multiple of N.
batch_size = 32
gradient_accumulation_steps = 4

learning_rate = 1e-3
min_lr = 1e-4
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 1000
# 10,000 steps of 65,536 tokens are about 655M tokens, roughly 1.4 passes over the train split.
max_iters = 10000
lr_decay_iters = 10000

eval_steps = [2000, 10000]
eval_interval = 500
eval_tokens = 1048576  # 2,048 windows of 512 tokens from the start of val
checkpoint_interval = 1000
log_interval = 10
