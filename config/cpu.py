# CPU-size overlay: apply after a variant, e.g. `python train.py config/dynactglu.py config/cpu.py`.
# A small model and schedule that finish in a few minutes on 2 CPU cores. Only the sizes and the
# schedule change, so every variant still shares the same setup.
out_dir = "out/cpu/{mlp}-s{seed}"
device = "cpu"

n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 32
dropout = 0.0

max_iters = 2000
lr_decay_iters = 2000
warmup_iters = 100
eval_steps = [500, 2000]
eval_interval = 250
eval_tokens = 16384  # 256 windows of 64 characters
log_interval = 50
