"""lba_tf: Learning by Aligning (ICCV 2021) for visible-infrared person re-identification.

The package follows the path of the data: ``data`` (datasets, sampler, tf.data pipeline) ->
``models`` (two-stream ResNet, CMAlign, heads) and ``losses`` -> ``training`` -> ``evaluation``
-> ``export`` (SavedModel for TensorFlow Serving) -> ``serving`` (local gRPC server, client).
``config`` holds the typed run settings and ``tools`` the converters. Importing the package does
not import TensorFlow, so command-line ``--help`` stays fast.
"""

__version__ = "0.1.0"
