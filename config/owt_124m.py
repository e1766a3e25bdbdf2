# GPT-2-124M shape on OpenWebText with the published GPT-2 reproduction schedule (AdamW, lr 6e-4 with
# beta2 0.95, 2,000 warmup steps, cosine decay to 6e-5 at step 600,000, about 0.5M tokens per step).
# A dataset config goes after the variant, because the variant files import the Tiny Shakespeare setup:
#   python data/prepare.py openwebtext
#   torchrun --standalone --nproc_per_node=8 train.py config/dynactglu.py config/owt_124m.py
# Every data, model and schedule setting that config/shakespeare_char.py sets is set here too.
dataset = "openwebtext"
out_dir = "out/owt_124m/{mlp}-s{seed}"

n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
bias = False

# batch_size * gradient_accumulation_steps * block_size = 12 * 40 * 1024 = 491,520 tokens per step.
# gradient_accumulation_steps must be a multiple of the number of processes: 40 suits 1, 2, 4, 5 or 8.
batch_size = 12
gradient_accumulation_steps = 40

learning_rate = 6e-4
min_lr = 6e-5
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 2000
max_iters = 600000
lr_decay_iters = 600000

eval_steps = []
eval_interval = 1000
eval_tokens = 2457600  # 2,400 windows of 1,024 tokens from the start of val
checkpoint_interval = 0
log_interval = 10
