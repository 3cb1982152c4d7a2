"""The train stage's table of data kinds (tfpipe/kinds.py names them): each module gives the stage its kind's schedule,
objective, input pipelines, model and what it logs. Each has resolve(params, manifest), check(params, candidates),
objective(params, manifest), prepare_data(params, manifest, plan, cache), build_model(params, plan, strategy,
manifest), float32_copy(model, preprocessor, params, manifest), deployable(model, preprocessor) (the model train
saves), resolve_cache(cache, manifest), resolved_params(params,
preprocessor), log_examples(params, log_dir, count), dataset_file(manifest) and description(manifest, params)."""

from components.train.kinds import image, table, text

KINDS = {"image": image, "table": table, "text": text}
