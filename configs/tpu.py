r"""Any dataset config on a Colab/Kaggle TPU (v3-8, v5e-8: 8 cores) or a TPU pod slice: data
parallel over every TPU device (the batch is sharded over a 'data' mesh axis, parameters
replicated), bf16 compute with float32 parameters, a batch that splits evenly.

  python -m jaxmed.train --config tpu:brain_tumor_mri --config.data.root=/data/brain-tumor-mri

A pod slice (several hosts): the same command on every host, with --distributed (jax finds the
other hosts itself) and --workdir on storage all hosts share; train.batch_size is the global
batch and must split over all devices, e.g. 512 on a v4-32's 16 chips:

  gcloud compute tpus tpu-vm ssh NAME --worker=all --command="python -m jaxmed.train --distributed \
    --config tpu:brain_tumor_mri --workdir /shared/runs/mri --config.data.root=/data/mri \
    --config.train.batch_size=512"

Several GPUs: configs/multi_gpu.py. Any dataset config: `--config tpu:chest_xray`,
`--config tpu:./mine.py` (default brain_tumor_mri). Not measured on a TPU here.
"""

from jaxmed.runtime import config_files


def get_config(base: str = "brain_tumor_mri"):
  """`base`: the dataset config this overlay goes on, a shipped name or a .py path."""
  c = config_files.load(base)
  c.model.dtype = "bfloat16"
  c.train.batch_size = 256        # 32 per core on 8 cores; a multiple of the device count
  c.train.eval_batch_size = 512
  c.frozen.learning_rate = 3e-3
  c.finetune.learning_rate = 1e-3  # larger batch: larger rate
  return c
