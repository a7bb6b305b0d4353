"""Run sizes: one frozen `Profile` per mode (--smoke, --quick, --full), chosen once on the command line.

Every size a suite uses lives here, so the time a mode takes is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LlamaShape:
    """A random Llama of a chosen size (shape sweeps, and the smoke run's stand-in model)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int


TINY = LlamaShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, vocab_size=512)
SMALL = LlamaShape(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=768, vocab_size=8192)
SMOLLM = LlamaShape(
    hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536, vocab_size=49152
)


@dataclass(frozen=True)
class Profile:
    name: str
    real_model: bool  # SmolLM2-135M-Instruct; False: a tiny random Llama (smoke run)
    repeats: int  # side-by-side pairs per ratio
    input_tokens: tuple[int, int]  # inclusive range of request input lengths
    output_tokens: tuple[int, int]  # inclusive range of new tokens per request (EOS ignored)
    num_virtual_tokens: int = 20
    mixed_batch: int = 8  # 1. mixed vs single: batch size = number of tasks
    peft_workloads: tuple[tuple[int, int], ...] = ((16, 4), (64, 1))  # 2. (tasks, requests per task)
    peft_batch_sizes: tuple[int, ...] = (4,)  # PEFT batch sizes tried per task; the best one counts
    cost_batch: int = 8  # 3. prompt cost: rows per batch
    http_requests: int = 32  # 4. HTTP overhead: requests per side and repeat
    http_concurrency: int = 8
    swaps: int = 20  # 5. hot swap: uploads per method
    load_rate: float = 4.0  # background requests per second during hot swaps (Poisson)
    load_in_flight: int = 2  # at most this many background requests outstanding (the load stays servable)
    swap_gap_s: float = 0.5  # pause before each upload, while the load keeps running
    many_tasks: int = 1000  # 6. registered tasks
    many_cached: int = 100  # tasks the device cache holds
    many_requests: int = 96
    many_warmup: int = 400  # untimed Zipf draws that bring the small cache to steady state first
    sweep_shape: LlamaShape = SMALL  # 7. scaling curves
    sweep_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    sweep_tasks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    sweep_prompt_lengths: tuple[int, ...] = (0, 8, 16, 32, 64, 128)
    sweep_output_tokens: int = 8
    continuous_requests: int = 16  # continuous vs static batching
    continuous_batch: int = 4
    # 9. decode step / floor: (rows, context) points, the last one carries the goal
    floor_grid: tuple[tuple[int, int], ...] = (
        (8, 100), (8, 200), (8, 400), (32, 100), (32, 200), (32, 400), (64, 100), (64, 200), (64, 400),
    )  # fmt: skip
    # 10. base-model throughput against transformers' own engines
    engines_requests: int = 32
    engines_inputs: tuple[int, int] = (32, 256)
    engines_outputs: tuple[int, int] = (64, 128)
    # 11. rows that fit a KV budget with one shared prefix
    capacity_prefix: int = 128
    capacity_budget_mb: int = 256
    structured_requests: int = 32  # 12. structured output and log-probabilities: rows per batch
    methods: tuple[str, ...] = field(default=("prompt_tuning", "p_tuning", "prefix", "multitask", "cpt", "cartridge"))


PROFILES = {
    "smoke": Profile(
        name="smoke", real_model=False, repeats=2, input_tokens=(4, 12), output_tokens=(2, 4), num_virtual_tokens=4,
        mixed_batch=2, peft_workloads=((2, 2), (4, 1)), peft_batch_sizes=(2,), cost_batch=2, http_requests=4,
        http_concurrency=2, swaps=2, load_rate=5.0, many_tasks=12, many_cached=4, many_requests=12,
        many_warmup=12, swap_gap_s=0.1, sweep_shape=TINY,
        sweep_batches=(1, 2), sweep_tasks=(1, 2), sweep_prompt_lengths=(0, 4), sweep_output_tokens=2,
        continuous_requests=4, continuous_batch=2, floor_grid=((2, 8), (4, 16)), engines_requests=4,
        engines_inputs=(4, 12), engines_outputs=(2, 4), capacity_prefix=8, capacity_budget_mb=1,
        structured_requests=4,
    ),
    # Under 10 minutes on a quiet 2-core CPU at one thread. Outputs are shorter than the realistic
    # 16-128 (PEFT's one-request-at-a-time side of vs_peft is most of the run); --full uses the realistic ones.
    "quick": Profile(
        name="quick", real_model=True, repeats=2, input_tokens=(32, 48), output_tokens=(6, 10), mixed_batch=4,
        http_requests=16, load_rate=2.0, many_requests=32, continuous_requests=8,
    ),
    # The realistic lengths. Not under an hour on a 2-core CPU: it took 1 h 34 min here, 71 min of
    # it vs PEFT, whose PEFT side alone is 60 min (PEFT's generate makes 4-6 tokens/s at these lengths and
    # the 64x1 workload runs one request at a time). Request counts are already small and repeats 2;
    # a GPU (bench/gpu.sh) is where this size fits in minutes.
    "full": Profile(
        name="full", real_model=True, repeats=2, input_tokens=(32, 256), output_tokens=(16, 128), mixed_batch=4,
        cost_batch=8, http_requests=16, load_rate=2.0, many_requests=32, sweep_output_tokens=16,
        continuous_requests=32, continuous_batch=8,
    ),
}  # fmt: skip
