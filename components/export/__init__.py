"""The export stage: stage (main), serving (the SavedModel's signature, registration, parity), variants (the table
of TFLite variants and how each is built), cache (converted variants keyed on their inputs), measure (accuracy,
size and latency of each), report (report.md and variants.png), cpu (what the build machine's CPU can do)."""
