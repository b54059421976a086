"""`text-embeddings-batch`: embed (rerank, classify) a whole file offline, locally or on Ray Data.

The model flags are the router's own argparse actions, borrowed from its parser, so their names,
help, choices and environment variables are the same in both commands."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import cli as router_cli
from ..settings import ModelSettings

# Settings fields whose router flags apply to a bulk job unchanged.
MODEL_FLAGS = (
    "model_id", "revision", "dtype", "pooling", "max_batch_tokens", "max_batch_requests", "device",
    "tokenization_workers", "huggingface_hub_cache", "hf_token", "auto_truncate", "torch_compile",
)
CHUNK_ROWS = 4096


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="text-embeddings-batch",
        description="Embed, rerank or classify every row of a file with the server's engine, in-process or on Ray Data",
    )
    router = router_cli.build_parser()
    for action in router._actions:
        if action.dest in MODEL_FLAGS:
            p._add_action(action)  # what argparse's `parents=` does, for a chosen few
    io = p.add_argument_group("input and output")
    io.add_argument("--input", required=True, help=".parquet, .jsonl, .json, .csv or .txt (one text per line); "
                    "JSON lines of OpenAI batch requests (custom_id, url, body) get OpenAI batch output lines")
    io.add_argument("--output", required=True, help=".parquet, .jsonl or .npy; rows in input order")
    io.add_argument("--text-column", default="text", help="Column (field) holding the text (default: text)")
    io.add_argument("--id-column", help="Column copied to the output under its own name (default: a `row` number)")
    io.add_argument("--query-column", default="query", help="--task rerank: the query column (default: query)")
    io.add_argument("--document-column", default="document",
                    help="--task rerank: the document column (default: document)")
    job = p.add_argument_group("job")
    job.add_argument("--task", choices=["embed", "rerank", "classify"], default="embed",
                     help="embed (default): an `embedding` per row; rerank: a `score` per (query, document) row; "
                     "classify: `label` and `scores` per row")
    job.add_argument("--prompt-name", help="Prompt from config_sentence_transformers.json to prepend")
    job.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                     help="L2-normalize embeddings (default: yes)")
    job.add_argument("--dimensions", type=int, help="Keep the first N dimensions (Matryoshka), before normalizing")
    job.add_argument("--raw-scores", action="store_true", help="rerank/classify: logits instead of probabilities")
    job.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                     help=f"Rows read, computed and saved together: the unit of memory and of --resume "
                     f"(default {CHUNK_ROWS})")
    job.add_argument("--resume", action="store_true",
                     help="Continue a killed run: chunks already in OUTPUT.parts/ are not computed again")
    job.add_argument("-q", "--quiet", action="store_true", help="No progress bar and no summary line")
    ray = p.add_argument_group("Ray Data (pip install 'tei[ray]')")
    ray.add_argument("--ray", action="store_true",
                     help="Run on Ray Data: the cluster in RAY_ADDRESS, else a local one on 127.0.0.1")
    ray.add_argument("--ray-actors", type=int,
                     help="Engine actors (default: one per --ray-cpus-per-actor CPUs, one CPU left for reading)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=1, help="CPUs per actor (default 1)")
    ray.add_argument("--ray-gpus-per-actor", type=float, default=0, help="GPUs per actor (default 0)")
    return p


def settings_from(args: argparse.Namespace) -> ModelSettings:
    values = {name: getattr(args, name) for name in MODEL_FLAGS}
    # The router's --model-id keeps its flags in order (several models); a job has one model.
    ids = [value for dest, value in getattr(args, "model_flags", None) or [] if dest == "model_id"]
    values["model_id"] = (ids[-1] if ids else values["model_id"]) or None
    values["hf_token"] = values["hf_token"] or router_cli._hf_token_from_file()
    values["auto_truncate"] = bool(values["auto_truncate"])
    values["tokenization_workers"] = max(1, values["tokenization_workers"])
    return ModelSettings.from_options(**values)


def make_plan(args: argparse.Namespace):
    from .inputs import Fields, InputError, Source, is_openai_batch
    from .job import JobOptions
    from .plan import Plan

    task = args.task
    if task == "embed" and os.path.isfile(args.input) and is_openai_batch(args.input):
        task = "openai"
    if task == "openai" and not args.output.endswith(".jsonl"):
        raise InputError(f"{args.output}: an OpenAI batch input gets OpenAI batch output lines: use a .jsonl output")
    if task != "embed" and args.output.endswith(".npy"):
        raise InputError(f"{args.output}: .npy holds embeddings only; write {task} results to .parquet or .jsonl")
    if args.chunk_rows < 1:
        raise InputError("--chunk-rows must be at least 1")
    settings = settings_from(args)
    fields = Fields(task, args.text_column, args.query_column, args.document_column, args.id_column)
    options = JobOptions(task, args.normalize, args.dimensions, args.prompt_name, args.raw_scores, settings.name)
    return Plan(Source(args.input, fields), args.output, options, settings, args.chunk_rows, args.resume, args.quiet)


def main(argv: list[str] | None = None) -> int:
    from ..app import StartupError
    from .inputs import InputError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)5s %(name)s: %(message)s")
    try:
        plan = make_plan(args)
        if args.ray:
            from .on_ray import run_on_ray

            run_on_ray(plan, args.ray_actors, args.ray_cpus_per_actor, args.ray_gpus_per_actor)
        else:
            from .local import run

            run(plan)
    except (InputError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line; a traceback helps no one here
        return 2 if not isinstance(exc, StartupError) else 1
    return 0
