"""The train stage: stage (main: set-up, the chief's and a worker's run), search (train.model / augmentation: auto),
schedule (phases, learning rate, optimizer, loss, the `auto` schedule), resume (run key, backups, resumable early
stopping), data (tf.data pipelines and augmentation), hardware (devices, precision, XLA, distribution)."""
