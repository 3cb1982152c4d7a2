"""`python -m components.ingest`: the ingest stage, as dvc.yaml runs it."""

from components.ingest.stage import main
from tfpipe.outputs import run_stage

run_stage("ingest", main)
