r"""Any dataset config on one machine with several GPUs (or several machines): data parallel over
every GPU of every process (the batch is sharded over a 'data' mesh axis, parameters replicated),
bf16 compute with float32 parameters and optimizer state.

One machine, all its GPUs (one process drives them all; CUDA_VISIBLE_DEVICES=0,1 picks some):

  pip install -U "jax[cuda12]"
  python -m jaxmed.train --config multi_gpu:brain_tumor_mri --config.data.root=/data/brain-tumor-mri

Several machines: the same command on each, --workdir on a filesystem all of them share, the
same dataset files on each (README, "Several GPUs, TPUs and hosts"). By hand, one process per
machine driving all its GPUs:

  JAXMED_COORDINATOR=host0:8476 JAXMED_NUM_PROCESSES=2 JAXMED_PROCESS_ID=<0 or 1> \
    python -m jaxmed.train --config multi_gpu:brain_tumor_mri --workdir /shared/runs/mri \
    --config.data.root=/data/brain-tumor-mri

Under SLURM, one task per GPU (how jax.distributed sets up SLURM jobs):

  srun --ntasks-per-node=8 --gpus-per-node=8 python -m jaxmed.train --distributed \
    --config multi_gpu:brain_tumor_mri --workdir /shared/runs/mri --config.data.root=/data/mri

train.batch_size is the global batch: 256 splits evenly over 1, 2, 4 or 8 GPUs (32 each on 8);
for 3 or 6 GPUs pass e.g. --config.train.batch_size=192 --config.train.eval_batch_size=384.
Every GPU holds the whole decoded uint8 dataset (about 0.3 GB for 6k images at 128 px).
Any dataset config: `--config multi_gpu:chest_xray` (default brain_tumor_mri). Not measured on
several GPUs here.
"""

from jaxmed.runtime import config_files


def get_config(base: str = "brain_tumor_mri"):
  """`base`: the dataset config this overlay goes on, a shipped name or a .py path."""
  c = config_files.load(base)
  c.model.dtype = "bfloat16"
  c.train.batch_size = 256
  c.train.eval_batch_size = 512
  c.frozen.learning_rate = 3e-3
  c.finetune.learning_rate = 1e-3  # 8x the base config's batch: a larger peak rate
  return c
