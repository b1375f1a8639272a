"""Any dataset config on a Colab/Kaggle TPU (v3-8, v5e-8: 8 cores) or several GPUs: data
parallel over every local device (the batch is sharded over a 'data' mesh axis, parameters
replicated), bf16 compute with float32 parameters, a batch that splits evenly.

  python -m jaxmed.train --config configs/tpu.py --config.data.root=/data/brain-tumor-mri

Base config: brain_tumor_mri (edit BASE below to use another). Not measured on a TPU here.
"""

from configs import brain_tumor_mri as BASE


def get_config():
  c = BASE.get_config()
  c.model.dtype = "bfloat16"
  c.train.batch_size = 256        # 32 per core on 8 cores; a multiple of the device count
  c.train.eval_batch_size = 512
  c.frozen.learning_rate = 3e-3
  c.finetune.learning_rate = 1e-3  # larger batch: larger rate
  return c
