"""python -m tsdkd_jax.eval --model=DIR --benchmarks=gsm8k,math500,... --out=DIR: see tsdkd_jax/eval/cli.py."""

from tsdkd_jax.eval.cli import main

if __name__ == "__main__":
    main()
