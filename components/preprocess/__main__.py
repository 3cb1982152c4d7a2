"""`python -m components.preprocess`: the preprocess stage, as dvc.yaml runs it."""

from components.preprocess.stage import main
from tfpipe.outputs import run_stage

run_stage("preprocess", main)
