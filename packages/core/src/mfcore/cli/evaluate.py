"""`mfcore eval`: lm-evaluation-harness tasks on an mfcore model, with lm-eval's own flags.

lm-eval's `lm_eval` command knows only the models in its own table (it reads no entry points), so it
cannot find the "mfcore" backend by itself; this command registers it and runs lm-eval's simple_evaluate:

    mfcore eval --model_args pretrained=DIR --tasks hellaswag,wikitext --batch_size 8 --output_path out/

Needs `pip install 'mfcore[eval]'`. Building the parser imports nothing heavy.
"""
from __future__ import annotations

from .arguments import both_spellings


def add_command(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score a model on lm-evaluation-harness tasks (needs mfcore[eval])",
                              description="Run lm-eval tasks on an mfcore model (lm-eval's flags).")
    add = p.add_argument
    add(*both_spellings("--tasks"), required=True, help="comma-separated lm-eval task names")
    add(*both_spellings("--model_args"), default="",
        help="pretrained=DIR|preset[,tokenizer=...,dtype=...,max_length=N,max_gen_toks=N,add_bos_token=...]")
    add("--model", default="mfcore", help="lm-eval backend (default mfcore; 'hf' runs the transformers reference)")
    add(*both_spellings("--include_path"), action="append", help="directory of extra task YAML files (repeatable)")
    add(*both_spellings("--num_fewshot"), type=int)
    add("--limit", type=float, help="documents per task (a fraction if < 1)")
    add(*both_spellings("--batch_size"), default="8")
    add(*both_spellings("--output_path"), help="results JSON file, or a directory for lm_eval_results.json")
    add(*both_spellings("--log_samples"), action="store_true", help="also write every document's responses")
    add(*both_spellings("--gen_kwargs"), help="generation settings for generate_until tasks: a=1,b=2")
    add("--seed", type=int)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from mfcore.evaluation.harness import evaluate_tasks, results_table, write_results

    if args.model == "mfcore" and "pretrained=" not in (args.model_args or ""):
        from mfcore.errors import ConfigError

        raise ConfigError("--model_args", "give the model: --model_args pretrained=DIR (or a preset name)")
    results = evaluate_tasks(args.tasks, model=args.model, model_args=args.model_args,
                             include_path=args.include_path, num_fewshot=args.num_fewshot, limit=args.limit,
                             batch_size=args.batch_size, log_samples=args.log_samples, gen_kwargs=args.gen_kwargs,
                             seed=args.seed)
    print(results_table(results))
    if args.output_path:
        print(f"results written to {write_results(results, args.output_path)}")
    return 0
