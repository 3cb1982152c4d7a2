"""The evaluate stage's table of data kinds (tfpipe/kinds.py names them): each module scores the trained model and a
classical baseline on its kind's test split, draws its pictures and says how the champion is scored on the same
split. Each has evaluate(params, model, manifest) -> components/evaluate/tasks.Evaluation."""

from components.evaluate.kinds import image, table, text

KINDS = {"image": image, "table": table, "text": text}
