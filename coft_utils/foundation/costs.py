"""The cost model behind ``python -m coft_utils plan``: FLOPs, memory per GPU and GPU-hours.

Pure arithmetic on model shapes and token counts: nothing here downloads, loads or trains::

    from coft_utils.foundation import costs
    s = costs.HUB_MODELS["allenai/OLMo-1B-hf"]          # 16 layers, d=2048 (its config.json)
    s.n_params                                          # 1,176,764,416 (embeddings included, tied once)
    costs.train_flops(s, tokens=1e9, seq_len=2048)      # 6 N D + the attention term
    costs.gpu_hours(3e18, "A100")                       # at costs.MFU of the bf16 dense peak
    costs.memory(s, train=True, precision="bf16", seq_len=1024, micro_batch=8, shards=8).total_gb
    costs.fit_gpus(lambda g: costs.memory(s, True, "bf16", 1024, 64 // g, shards=g))   # (gpus, Memory)

The model (every number is an estimate for planning a spend; the runs' records hold measured times):

* **FLOPs** (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Sec. 2.1, Table 1):
  a forward pass costs ``2 N + 2 n_layer n_ctx d_model`` FLOPs per token, where ``N`` counts the
  parameters of the matrix multiplications (every layer's attention and MLP matrices and the
  output head; an embedding lookup costs nothing) and the second term is the attention
  scores and weighted sum. Training = forward + backward = 3 x forward (``6 N D`` plus the
  attention term); with gradient checkpointing the forward runs twice (4 x forward, 8 N D).
  Evaluation (perplexity, log-likelihood of benchmark choices) = one forward, ``2 N D``.
* **Time**: FLOPs / (peak x MFU). Peak dense bf16 tensor-core throughput from NVIDIA's data
  sheets: A100 SXM 312 TFLOP/s (NVIDIA A100 Tensor Core GPU data sheet), H100 SXM 989 TFLOP/s
  (NVIDIA H100 Tensor Core GPU data sheet, without sparsity). ``MFU`` = 0.40, a typical model
  FLOPs utilisation of well-tuned bf16 training at 1B-7B scale (the PaLM paper, Chowdhery et
  al. 2022, Table 3, reports 46 %; small models and evaluation usually reach less, so these
  hours are optimistic for the 15M-90M suite). GPU-hours do not depend on how many GPUs share
  a unit (wall hours = GPU-hours / GPUs).
* **Memory per GPU** = model states + activations + logits + a fixed 1 GB (CUDA context,
  allocator slack).
  Model states with AdamW: 16 bytes per parameter (fp32 weights 4, fp32 gradients 4, Adam's
  two fp32 moments 8), the same for fp32 and for bf16 autocast over fp32 weights (what the
  Hugging Face Trainer's ``bf16=True`` does; ZeRO, Rajbhandari et al. 2020, Sec. 3.1 counts
  16 bytes for mixed-precision Adam too); divided by the shard count under FSDP full sharding
  (plus one layer's gathered bf16 weights). Evaluation holds the weights only (2 bytes bf16,
  4 bytes fp32).
  Activations per layer: ``34 s b d`` bytes in 16-bit (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", Eq. 1 without the ``5 a s / d`` term of
  the attention scores, which a fused / SDPA attention kernel does not store), doubled for
  fp32; with gradient checkpointing only each layer's input (``2 s b d``) plus one layer's full
  activations. Logits: ``s b V`` x 10 bytes in training (bf16 logits 2, their fp32 copy for
  the loss 4, its gradient 4), x 6 in evaluation. ``s`` tokens per sequence, ``b`` sequences
  per GPU per micro-batch, ``d`` width, ``V`` vocabulary.
* **GPUs of a unit**: :func:`fit_gpus` takes the smallest of 1, 2, 4, 8 whose memory per GPU fits
  ``GPU_MEMORY_GB`` (80 GB: A100-80GB, H100-80GB) under the chapter's parallelism.

Model shapes of the built-in hub series are the public ``config.json`` values of each
repository (:data:`HUB_MODELS`, sources named there); the project's own OLMo sizes come from
:data:`coft_utils.foundation.models.OLMO_PRESETS`. Nothing is downloaded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["ModelShape", "HUB_MODELS", "GPUS", "MFU", "GPU_MEMORY_GB", "CostError", "Memory", "olmo_shape",
           "shape_of", "train_flops", "eval_flops", "gpu_hours", "memory", "fit_gpus", "TRAIN_BYTES_PER_PARAM"]


class CostError(ValueError):
    """A model or setting the cost model cannot price (the message says what is missing)."""


GPUS: dict[str, float] = {"A100": 312e12, "H100": 989e12}  # dense bf16 FLOP/s (NVIDIA data sheets)
MFU = 0.40
GPU_MEMORY_GB = 80.0
CONTEXT_GB = 1.0
TRAIN_BYTES_PER_PARAM = 16  # fp32 weights + fp32 grads + 2 fp32 Adam moments (ZeRO, Sec. 3.1)
ACT_BYTES_16BIT = 34  # per token per width per layer (Korthikanti et al. 2022, Eq. 1, fused attention)


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's shape; ``mlp``: 'swiglu' (3 matrices d x ffn: OLMo, LLaMA)
    or 'gelu' (2 matrices: GPT-NeoX / Pythia); ``tied``: the output head shares the embedding."""

    name: str
    layers: int
    d_model: int
    heads: int
    ffn: int
    vocab: int
    tied: bool
    mlp: str = "swiglu"
    source: str = ""
    ctx: int = 2048  # max_position_embeddings: the context a chapter uses when it takes "the model's"

    @property
    def layer_params(self) -> int:
        n_mlp = (3 if self.mlp == "swiglu" else 2) * self.d_model * self.ffn
        return 4 * self.d_model * self.d_model + n_mlp  # q, k, v, o + MLP (biases, norms: < 0.1 %)

    @property
    def n_params(self) -> int:
        """Every parameter: the layers, the embedding and (untied) the output head."""
        emb = self.vocab * self.d_model
        return self.layers * self.layer_params + emb * (1 if self.tied else 2)

    @property
    def n_matmul(self) -> int:
        """Parameters that take part in a matrix multiplication per token (Kaplan's N plus the head)."""
        return self.layers * self.layer_params + self.vocab * self.d_model


def _hf(repo: str) -> str:
    return f"config.json of huggingface.co/{repo}"


# hub id -> shape; values from each repository's config.json (hidden_size, intermediate_size,
# num_hidden_layers, num_attention_heads, vocab_size, tie_word_embeddings). Cross-checks:
# OLMo-1B 1.18B parameters (OLMo paper, Groeneveld et al. 2024, Table 1: d=2048, 16 layers,
# 16 heads); OLMo-2-1124-7B 7.30B (OLMo 2 paper, Table 1: 32 layers, d=4096); Pythia totals in
# the Pythia model cards (70,426,624 / 162,322,944 / 405,334,016 / 1,011,781,632); Amber is
# the LLaMA-7B shape (LLM360 Amber model card; Touvron et al. 2023, Table 2).
HUB_MODELS: dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("allenai/OLMo-1B-hf", 16, 2048, 16, 8192, 50304, True, "swiglu", _hf("allenai/OLMo-1B-hf")),
    ModelShape("allenai/OLMo-2-1124-7B", 32, 4096, 32, 11008, 100352, False, "swiglu",
               _hf("allenai/OLMo-2-1124-7B"), 4096),
    ModelShape("LLM360/Amber", 32, 4096, 32, 11008, 32000, False, "swiglu", _hf("LLM360/Amber")),
    ModelShape("EleutherAI/pythia-70m", 6, 512, 8, 2048, 50304, False, "gelu", _hf("EleutherAI/pythia-70m")),
    ModelShape("EleutherAI/pythia-160m", 12, 768, 12, 3072, 50304, False, "gelu", _hf("EleutherAI/pythia-160m")),
    ModelShape("EleutherAI/pythia-410m", 24, 1024, 16, 4096, 50304, False, "gelu", _hf("EleutherAI/pythia-410m")),
    ModelShape("EleutherAI/pythia-1b", 16, 2048, 8, 8192, 50304, False, "gelu", _hf("EleutherAI/pythia-1b")),
)}


def olmo_shape(preset: str, vocab: int, ctx: int = 2048, tied: bool = True) -> ModelShape:
    """The shape of one of the project's OLMo presets (tied embeddings like the suite's models at
    smoke/cpu/gpu; ``tied=False`` under muP, which has a separate output layer, as at paper)."""
    from . import models
    if preset not in models.OLMO_PRESETS:
        raise CostError(f"unknown OLMo preset {preset!r}; allowed: {', '.join(models.OLMO_PRESETS)}")
    layers, d, heads, ffn = models.OLMO_PRESETS[preset]
    return ModelShape(preset, layers, d, heads, ffn, int(vocab), bool(tied), "swiglu",
                      "coft_utils.foundation.models.OLMO_PRESETS", int(ctx))


def shape_of(ckpt) -> ModelShape:
    """The shape of a checkpoint (a ``series.Checkpoint``): its hub id in :data:`HUB_MODELS`, or
    the ``config.json`` of its local folder. Raises :class:`CostError` naming what is missing."""
    if getattr(ckpt, "hub_id", None) in HUB_MODELS and not getattr(ckpt, "path", None):
        return HUB_MODELS[ckpt.hub_id]
    path = getattr(ckpt, "path", None)
    cfgf = Path(path) / "config.json" if path else None
    if cfgf is not None and cfgf.is_file():
        c = json.loads(cfgf.read_text())
        try:
            act = str(c.get("hidden_act", c.get("activation_function", "silu")))
            return ModelShape(str(path), int(c["num_hidden_layers"]), int(c["hidden_size"]),
                              int(c.get("num_attention_heads", 1)), int(c["intermediate_size"]), int(c["vocab_size"]),
                              bool(c.get("tie_word_embeddings", True)), "gelu" if "gelu" in act else "swiglu",
                              str(cfgf), int(c.get("max_position_embeddings", 2048)))
        except KeyError as e:
            raise CostError(f"{cfgf} lacks {e} (needed: num_hidden_layers, hidden_size, intermediate_size, "
                            "vocab_size)") from None
    raise CostError(f"no model shape for checkpoint {getattr(ckpt, 'label', ckpt)!r} "
                    f"({getattr(ckpt, 'source', ckpt)}): its hub id is not in costs.HUB_MODELS "
                    f"({', '.join(HUB_MODELS)}) and it has no local config.json")


def _check(tokens: float, seq_len: int):
    if not (isinstance(tokens, (int, float)) and math.isfinite(tokens) and tokens >= 0):
        raise CostError(f"tokens must be a finite number >= 0, got {tokens!r}")
    if not (isinstance(seq_len, int) and seq_len >= 1):
        raise CostError(f"seq_len must be an integer >= 1, got {seq_len!r}")


def forward_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    return 2.0 * shape.n_matmul + 2.0 * shape.layers * seq_len * shape.d_model


def train_flops(shape: ModelShape, tokens: float, seq_len: int, recompute: bool = False) -> float:
    """Training FLOPs: 3 forward passes per token (4 with gradient checkpointing)."""
    _check(tokens, seq_len)
    return (4.0 if recompute else 3.0) * forward_flops_per_token(shape, seq_len) * tokens


def eval_flops(shape: ModelShape, tokens: float, seq_len: int) -> float:
    """Evaluation FLOPs: one forward pass per token."""
    _check(tokens, seq_len)
    return forward_flops_per_token(shape, seq_len) * tokens


def gpu_hours(flops: float, gpu: str = "A100", mfu: float = MFU) -> float:
    if gpu not in GPUS:
        raise CostError(f"unknown GPU {gpu!r}; allowed: {', '.join(GPUS)}")
    if not (0 < mfu <= 1):
        raise CostError(f"mfu must be in (0, 1], got {mfu!r}")
    return flops / (GPUS[gpu] * mfu) / 3600.0


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU of one unit, by part, in GB (1e9 bytes)."""

    states_gb: float
    activations_gb: float
    logits_gb: float
    context_gb: float = CONTEXT_GB

    @property
    def total_gb(self) -> float:
        return self.states_gb + self.activations_gb + self.logits_gb + self.context_gb


def memory(shape: ModelShape, train: bool, precision: str, seq_len: int, micro_batch: int, shards: int = 1,
           grad_checkpointing: bool = False) -> Memory:
    """Memory per GPU of training (AdamW) or evaluating ``shape`` on ``micro_batch`` sequences of
    ``seq_len`` tokens; ``shards``: FSDP full-shard degree of the model states (1: none, as in DDP);
    ``precision``: 'bf16' | 'fp16' (16-bit activations) or 'fp32' / 'no' / 'float32'."""
    if precision in ("bf16", "fp16", "bfloat16"):
        half = True
    elif precision in ("fp32", "no", "float32"):
        half = False
    else:
        raise CostError(f"unknown precision {precision!r}; allowed: bf16, fp16, bfloat16, fp32, no, float32")
    if not (isinstance(shards, int) and shards >= 1):
        raise CostError(f"shards must be an integer >= 1, got {shards!r}")
    micro_batch = max(1, int(micro_batch))
    n, s, b, d, L, V = shape.n_params, seq_len, micro_batch, shape.d_model, shape.layers, shape.vocab
    act_layer = ACT_BYTES_16BIT * s * b * d * (1 if half else 2)
    if train:
        states = TRAIN_BYTES_PER_PARAM * n / shards + (2 * shape.layer_params if shards > 1 else 0)
        acts = (L * 2 * s * b * d + act_layer) if grad_checkpointing else L * act_layer
        logits = 10 * s * b * V
    else:
        states = (2 if half else 4) * n
        acts = 2 * act_layer  # no activations are kept between layers: about two layers' worth in flight
        logits = 6 * s * b * V
    return Memory(states / 1e9, acts / 1e9, logits / 1e9)


def fit_gpus(mem_of: Callable[[int], Memory], capacity_gb: float = GPU_MEMORY_GB,
             choices: tuple[int, ...] = (1, 2, 4, 8)) -> tuple[int, Memory, bool]:
    """(GPUs, memory per GPU, fits): the smallest GPU count of ``choices`` whose ``mem_of(gpus)``
    fits ``capacity_gb``; the largest count with ``fits=False`` when none does."""
    for g in choices:
        m = mem_of(g)
        if m.total_gb <= capacity_gb:
            return g, m, True
    return choices[-1], mem_of(choices[-1]), False
