# CPU-scale reproduction of the comparison: the dynActivation abstract's step counts (5620 and 34300) with a model small
# enough that 4 variants x 3 seeds train in about 75 minutes on 2 CPU cores, two runs at a time:
#   python compare.py run --variants swiglu dynactglu geglu gelu --seeds 0 1 2 config/cpu_grid.py --jobs 2 --out=runs/cpu
# Everything else (schedule, optimizer, eval steps) is the paper-scale setup.
from config.shakespeare_char import *  # noqa: F401,F403

device = "cpu"
n_layer = 6
n_head = 3
# At width 48 the GLU hidden size 8/3 * 48 = 128 is already a multiple of 64, so all four MLP types have
# the same number of weights (GELU 2 * 48 * 192 = GLU 3 * 48 * 128); at width 64 the rounding up to 192
# would give the GLUs 12.5% more MLP weights than GELU.
n_embd = 48
block_size = 64
batch_size = 8
dropout = 0.0

eval_interval = 1000
eval_tokens = 0  # the whole validation split: 1,742 windows of 64 characters
log_interval = 100
