"""Test-wide settings: quiet TensorFlow, CPU only, the programs' allocator settings."""

import os

from lba_tf.runtime import tune_allocator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
tune_allocator()  # as the entry points do, before TensorFlow loads
