#!/usr/bin/env python3
"""End-to-end generation with vLLM on a GPU: a small LLaMA-architecture model built from a
config.json alone (dummy weights, no tokenizer, prompt token ids; nothing is downloaded), once
without CUDA graphs (enforce_eager=True) and once with them (torch.compile + CUDA graphs).

Not a pytest module (it needs a GPU and a vLLM built with kernels): run it with the interpreter
whose site holds the vLLM wheel (tests/gpu/README.md, "vLLM"). It installs nothing. Each mode runs
in a child process of its own (so the first engine's GPU memory is gone before the second
starts); per mode it prints the attention backend vLLM picked, the engine start time, and the
output tokens per second of one batch (default 32 prompts x 128 new tokens, ignore_eos).

  VLLM_ATTENTION_BACKEND=TRITON_ATTN python3 tests/gpu/vllm_generate.py   # or --backend TRITON_ATTN
  python3 tests/gpu/vllm_generate.py --modes eager --json out.json

Exit status 1 if a mode fails, produces no tokens, or produces fewer than asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A LLaMA-architecture model small enough to build in seconds: ~155 M parameters (bf16: ~0.3 GB).
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}

RESULT_TAG = "VLLM_GENERATE_RESULT "
BACKEND_LOG = re.compile(r"Using (?:AttentionBackendEnum\.)?([A-Z0-9_]+) (?:attention )?backend")
QUIET_ENV = {  # nothing phones home or looks for a hub; callables may travel to the worker
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
}


def write_model(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(LLAMA_CONFIG, indent=2) + "\n")
    return directory


def _worker_backends(worker) -> list[str]:
    """Runs inside the GPU worker (collective_rpc): the attention backends of the model runner."""
    names = set()
    for groups in getattr(worker.model_runner, "attn_groups", []) or []:
        for group in groups:
            names.add(group.backend.get_name())
    return sorted(names)


def child(args: argparse.Namespace) -> int:
    """One mode in this process: build the engine, warm up, time one batch, print a result line."""
    from vllm import LLM, SamplingParams

    eager = args.child == "eager"
    result: dict = {"mode": "eager" if eager else "cuda graphs", "ok": False}
    started = time.perf_counter()
    llm = LLM(
        model=str(args.model),
        load_format="dummy",
        skip_tokenizer_init=True,
        dtype="bfloat16",
        enforce_eager=eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        max_num_seqs=max(args.prompts, 8),
        seed=args.seed,
    )
    result["engine_start_s"] = round(time.perf_counter() - started, 1)
    config = llm.llm_engine.vllm_config
    result["compilation_mode"] = str(getattr(config.compilation_config, "mode", "?"))
    result["cudagraph_mode"] = str(getattr(config.compilation_config, "cudagraph_mode", "?"))
    try:
        result["attention_backends"] = sorted({n for names in llm.collective_rpc(_worker_backends) for n in names})
    except Exception as e:  # noqa: BLE001 - the log line says it too; the parent reads that
        result["attention_backends"] = []
        result["attention_backends_error"] = f"{type(e).__name__}: {e}"[:200]

    rng = random.Random(args.seed)
    vocab = LLAMA_CONFIG["vocab_size"]

    def prompts(n: int) -> list[dict]:
        return [{"prompt_token_ids": [rng.randrange(3, vocab) for _ in range(rng.randint(16, 64))]} for _ in range(n)]

    params = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True, temperature=0.0, detokenize=False)
    llm.generate(prompts(2), SamplingParams(max_tokens=8, ignore_eos=True, detokenize=False), use_tqdm=False)

    batch = prompts(args.prompts)
    t0 = time.perf_counter()
    outputs = llm.generate(batch, params, use_tqdm=False)
    elapsed = time.perf_counter() - t0

    counts = [len(o.outputs[0].token_ids) if o.outputs else 0 for o in outputs]
    ids_ok = all(0 <= t < vocab for o in outputs for c in o.outputs for t in c.token_ids)
    total = sum(counts)
    result.update(
        prompts=len(batch),
        prompt_tokens=sum(len(p["prompt_token_ids"]) for p in batch),
        output_tokens=total,
        min_tokens_per_prompt=min(counts) if counts else 0,
        generate_s=round(elapsed, 3),
        tokens_per_s=round(total / elapsed, 1) if elapsed > 0 else 0.0,
        first_tokens=list(outputs[0].outputs[0].token_ids[:8]) if total else [],
    )
    result["ok"] = bool(total) and len(outputs) == len(batch) and min(counts) == args.max_tokens and ids_ok
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def run_mode(mode: str, args: argparse.Namespace, model: Path) -> dict:
    """Run one mode in a child process, echoing its output; its result line, or a failure."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--model", str(model),
           "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens), "--seed", str(args.seed),
           "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--max-model-len", str(args.max_model_len)]
    env = dict(os.environ, **QUIET_ENV, PYTHONUNBUFFERED="1")
    print(f"\n=== {mode}: {' '.join(cmd)}", flush=True)
    result, logged = None, set()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        elif m := BACKEND_LOG.search(line):
            logged.add(m.group(1))
    rc = proc.wait()
    if result is None:
        result = {"mode": mode, "ok": False, "error": f"child exited {rc} without a result"}
    result["exit_status"] = rc
    result["backend_log"] = sorted(logged)
    if rc != 0:
        result["ok"] = False
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="eager,graphs", help="comma-separated: eager, graphs (default both)")
    ap.add_argument("--backend", help="attention backend (sets VLLM_ATTENTION_BACKEND), e.g. TRITON_ATTN, FLASH_ATTN")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=("eager", "graphs"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        return child(args)
    if args.backend:
        os.environ["VLLM_ATTENTION_BACKEND"] = args.backend
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("eager", "graphs") for m in modes):
        ap.error("--modes takes eager and/or graphs")

    with tempfile.TemporaryDirectory(prefix="vllm-tiny-llama-") as tmp:
        model = write_model(Path(tmp) / "model")
        print(f"model: {model}/config.json ({json.dumps(LLAMA_CONFIG)})")
        print(f"VLLM_ATTENTION_BACKEND={os.environ.get('VLLM_ATTENTION_BACKEND', '(unset: vLLM chooses)')}")
        results = [run_mode(m, args, model) for m in modes]

    print("\nmode          backend(s)            engine start s  output tokens  generate s  tokens/s  ok")
    for r in results:
        backends = ",".join(r.get("attention_backends") or r.get("backend_log") or ["?"])
        print(f"{r['mode']:<13} {backends:<21} {r.get('engine_start_s', '-'):>14} {r.get('output_tokens', 0):>14} "
              f"{r.get('generate_s', '-'):>11} {r.get('tokens_per_s', '-'):>9}  {'yes' if r['ok'] else 'NO'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        info = {"config": LLAMA_CONFIG, "attention_backend_env": os.environ.get("VLLM_ATTENTION_BACKEND"),
                "prompts": args.prompts, "max_tokens": args.max_tokens, "results": results}
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0 if all(r["ok"] and r.get("output_tokens") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
