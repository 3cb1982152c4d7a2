"""`python -m components.evaluate`: the evaluate stage, as dvc.yaml runs it."""

from components.evaluate.stage import main
from tfpipe.outputs import run_stage

run_stage("evaluate", main)
