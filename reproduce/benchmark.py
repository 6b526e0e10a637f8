"""Complexity and throughput of every registered model: ``results/benchmarks.{json,md}``.

    python reproduce/benchmark.py                          # every non-test model
    python reproduce/benchmark.py --models 'cswin*' --iters 50
    python reproduce/benchmark.py --models cswin_unet_test --include-test --out-dir /tmp/bench
    python reproduce/benchmark.py --models 'glare*' --out-dir /tmp/bench   # GLARE: each stage and the whole
    python reproduce/benchmark.py --models 'glare*' --no-timing --out-dir results/glare   # counts only, seconds

What is measured, the JSON schema and the reference files: ablations/framework/benchmarks.py.
"""
import _bootstrap  # noqa: F401, I001  (first: puts the repository root on sys.path)

import argparse
import shlex
import sys
from pathlib import Path

from ablations.framework.benchmarks import run_benchmarks, select_models, write_benchmarks


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    summary, examples = __doc__.split("\n\n")[:2]
    parser = argparse.ArgumentParser(description=summary, epilog="examples:\n" + examples,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="*",
                        help="glob over registered model names, e.g. 'glare*' (default: every non-test model)")
    parser.add_argument("--include-test", action="store_true", help="also benchmark the tiny *_test models")
    parser.add_argument("--batch-size", type=int, default=1, help="images per timed step (MACs are per image)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed CPU steps before timing")
    parser.add_argument("--iters", type=int, default=20, help="timed CPU steps (the median is reported)")
    parser.add_argument("--cuda-warmup", type=int, default=10, help="untimed CUDA steps before timing")
    parser.add_argument("--cuda-iters", type=int, default=50, help="timed CUDA steps")
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA even if a GPU is present")
    parser.add_argument("--no-timing", action="store_true",
                        help="parameters and MACs only, counted on the meta device (no timing; seconds per model)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--out-dir", type=Path, default=Path("results"), help="where benchmarks.json/.md go")
    args = parser.parse_args(argv)
    try:
        names = select_models(args.models, include_test=args.include_test)
        document = run_benchmarks(
            names, command=shlex.join(["python", "reproduce/benchmark.py", *argv]), batch_size=args.batch_size,
            warmup=args.warmup, iters=args.iters, cuda=not args.no_cuda, cuda_warmup=args.cuda_warmup,
            cuda_iters=args.cuda_iters, threads=args.threads, timing=not args.no_timing)
    except ValueError as err:  # a bad argument or reference file: one line, exit 2
        parser.error(str(err))
    json_path, md_path = write_benchmarks(document, args.out_dir)
    print(f"wrote {json_path} and {md_path} ({document['settings']['elapsed_s']} s)")
    return 1 if any(record.get("error") for record in document["models"]) else 0


if __name__ == "__main__":
    sys.exit(main())
