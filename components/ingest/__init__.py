"""The ingest stage: data/raw to validated TFRecord shards. stage (main), layout (what data/raw holds), split
(duplicates, near-duplicate groups, the group-aware split), validation (Great Expectations and the failures as
sentences), report (statistics and pictures)."""
