"""`python -m components.export`: the export stage, as dvc.yaml runs it."""

from components.export.stage import main
from tfpipe.outputs import run_stage

run_stage("export", main)
