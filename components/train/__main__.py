"""`python -m components.train`: the train stage, as dvc.yaml runs it."""

from components.train.stage import main
from tfpipe.outputs import run_stage

run_stage("train", main)
