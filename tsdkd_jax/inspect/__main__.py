"""python -m tsdkd_jax.inspect --workdir=DIR [--n_prompts=4] [--seed=0]: see tsdkd_jax/inspect/__init__.py."""

import argparse

from tsdkd_jax import inspect


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tsdkd_jax.inspect", description=inspect.__doc__)
    parser.add_argument("--workdir", required=True, help="a run's workdir (holds config.json)")
    parser.add_argument("--n_prompts", type=int, default=4, help="held-out prompts to show")
    parser.add_argument("--seed", type=int, default=0, help="seeds the student's sampling")
    parser.add_argument("--prompts", default=None, help="prompt file (default: the run's held-out split)")
    args = parser.parse_args(argv)
    paths = inspect.write(args.workdir, n_prompts=args.n_prompts, seed=args.seed, prompts_path=args.prompts)
    print(f"wrote {paths['html']} and {paths['png']}")


if __name__ == "__main__":
    main()
