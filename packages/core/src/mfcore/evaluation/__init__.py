"""Evaluation of mfcore models on benchmark tasks: `lm_eval_backend` (the lm-evaluation-harness model
"mfcore", needs `pip install 'mfcore[eval]'`) and `harness` (running lm-eval tasks from Python or a task
YAML). Nothing here is imported by `import mfcore`; lm-eval loads only when a module here is used."""
