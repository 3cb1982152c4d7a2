"""The evaluate stage: stage (main), metrics (test-split metrics, calibration), gate (the promotion gate against
the floor, the baseline and the champion), report (pictures and TensorBoard summaries), baseline (the classical
baseline)."""
