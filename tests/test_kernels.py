"""The CPU kernels (nanogpt_cli.kernels): applied to a built model from outside, equal to the
reference model in losses and gradients, self-checked with a fallback to torch's ops, and
switched by one option whose ``auto`` follows a cached calibration."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

import nanogpt_cli.kernels as kernels
from nanogpt_cli.config import ModelConfig, build_config
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.kernels import apply_kernels, calibrate, gelu, kernel_mode, linear, loss_head
from nanogpt_cli.kernels import onednn as onednn_module
from nanogpt_cli.kernels.loss_head import linear_cross_entropy
from nanogpt_cli.model import GPT
from nanogpt_cli.sample import KVCache, generate

HAS_ONEDNN = onednn_module.signature_problem() is None
ALL = ["onednn-linear", "split-linear", "loss-head", "sigmoid-gelu"]
# Kernel and reference differ by float rounding only: the products' summation order.
TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch on two threads, so that the split product has parts to split into."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_checks() -> Iterator[None]:
    """Forget this process's self-check results before and after the test."""
    saved = dict(kernels._problems)
    kernels._problems.clear()
    yield
    kernels._problems.clear()
    kernels._problems.update(saved)


@contextlib.contextmanager
def warnings_logged() -> Iterator[list[str]]:
    """The warnings nanogpt logs meanwhile (its records are off unless asked for)."""
    from loguru import logger

    found: list[str] = []
    logger.enable("nanogpt_cli")
    sink = logger.add(lambda m: found.append(m.record["message"]), level="WARNING")
    try:
        yield found
    finally:
        logger.remove(sink)
        logger.disable("nanogpt_cli")


def model_pair(vocab: int = 4096, width: int = 64, **overrides: Any) -> tuple[GPT, GPT]:
    """A reference model and a copy with the weights of the first (same state dict)."""
    torch.manual_seed(0)
    cfg = dict(n_layer=2, n_head=2, n_embd=width, block_size=32, vocab_size=vocab, **overrides)
    ref = GPT(ModelConfig(**cfg))
    fast = GPT(ModelConfig(**cfg))
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def assert_same_training(
    ref: GPT, fast: GPT, idx: torch.Tensor, targets: torch.Tensor, return_logits: bool = False
) -> None:
    """A training step's loss (scaled, as gradient accumulation scales it) and every
    parameter's gradient are the same in both models, to TOL."""
    losses, grads = [], []
    for model in (ref, fast):
        model.zero_grad(set_to_none=True)
        _, loss = model(idx, targets, return_logits=return_logits)
        assert loss is not None
        (loss / 2).backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], **TOL)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, **TOL, msg=name)


@pytest.mark.parametrize("vocab", [65, 4096])
def test_kernel_model_gives_the_reference_losses_and_gradients(vocab: int) -> None:
    """Losses (with and without logits, under no_grad too) and every parameter's gradient
    are the reference model's to float tolerance (TOL), with every kernel applied."""
    ref, fast = model_pair(vocab)
    applied = apply_kernels(fast, "on")
    expected = [k for k in ALL if HAS_ONEDNN or k != "onednn-linear"]
    if vocab < loss_head.MIN_VOCAB:  # no loss head, and no weight large enough to split
        expected.remove("loss-head")
        expected.remove("split-linear")
    elif torch.get_num_threads() < 2:
        expected.remove("split-linear")
    assert applied == expected
    idx = torch.randint(0, vocab, (4, 32))  # 4 x 32 x 256 MLP activations: the sigmoid GELU
    targets = idx.roll(1, dims=1)
    targets[0, :5] = -1
    for return_logits in (False, True):
        assert_same_training(ref, fast, idx, targets, return_logits)
    with torch.no_grad():
        torch.testing.assert_close(fast(idx, targets)[1], ref(idx, targets)[1], **TOL)


KERNEL_CLASSES = {
    "onednn-linear": (torch.nn.Linear, linear.OneDNNLinear),
    "split-linear": (torch.nn.Linear, linear.SplitLinear),
    "loss-head": (loss_head.LMHead, loss_head.FusedLossHead),
    "sigmoid-gelu": (torch.nn.GELU, gelu.SigmoidGELU),
}


@pytest.mark.parametrize("name", list(KERNEL_CLASSES))
def test_each_kernel_alone_gives_the_reference_losses_and_gradients(
    name: str, two_threads: None
) -> None:
    """One kernel swapped in at a time, as apply_kernels swaps it: training losses and
    gradients, and inference logits (one row: the split product's case), equal the
    reference model's to float tolerance."""
    if name == "onednn-linear" and not HAS_ONEDNN:
        pytest.skip("this torch build has no oneDNN linear")
    replaced, kernel = KERNEL_CLASSES[name]
    ref, fast = model_pair(4096)
    swapped = [m for m in fast.modules() if isinstance(m, replaced)]
    for m in swapped:
        kernels.swap(m, kernel)
    assert swapped and all(isinstance(m, kernel) for m in swapped)
    idx = torch.randint(0, 4096, (4, 32))
    assert_same_training(ref, fast, idx, idx.roll(1, dims=1))
    with torch.inference_mode():
        torch.testing.assert_close(fast(idx[:1, :1])[0], ref(idx[:1, :1])[0], **TOL)


def test_kernels_apply_alike_under_no_grad_and_inference_mode(
    fresh_checks: None, two_threads: None
) -> None:
    """A model loaded for sampling inside no_grad or inference_mode gets the same kernels
    (their self-checks take gradients of their own), and the caller's mode is unchanged."""
    expected = apply_kernels(model_pair(4096)[1], "on")
    for context in (torch.no_grad, torch.inference_mode):
        kernels._problems.clear()
        with context():
            assert apply_kernels(model_pair(4096)[1], "on") == expected
            assert not torch.is_grad_enabled()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_compiled_decoding_of_a_kernel_model_is_one_graph(two_threads: None) -> None:
    """The fixed-shape decode step of a model with every kernel (a weight large enough to
    split, in inference) compiles without a graph break and gives the eager logits."""
    from nanogpt_cli.sample import decode_step

    _, fast = model_pair(4096)
    apply_kernels(fast.eval(), "on")
    cache = KVCache.for_model(fast, 1)
    idx, pos = torch.randint(0, 4096, (1, 1)), torch.tensor([0])
    compiled = torch.compile(decode_step, backend="aot_eager", fullgraph=True)
    with torch.inference_mode():
        eager = decode_step(fast, idx, pos, cache.k.clone(), cache.v.clone())
        torch.testing.assert_close(compiled(fast, idx, pos, cache.k, cache.v), eager, **TOL)


def test_a_layer_with_its_own_forward_is_left_alone() -> None:
    """Only layers that compute what torch's class does are swapped."""

    class Scaled(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model = torch.nn.Sequential(Scaled(8, 8), torch.nn.Linear(8, 8))
    apply_kernels(model, "on")
    assert type(model[0]) is Scaled
    assert isinstance(model[1], linear.OneDNNLinear) == HAS_ONEDNN


def test_calibration_leaves_the_random_stream_and_survives_a_failing_measurement(
    tmp_path: Path,
) -> None:
    """Timing a kernel (random inputs of its own) does not move the caller's random stream;
    a measurement that fails leaves the kernel off, with a warning, not the run broken."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert calibrate.faster(
        "a", lambda: (torch.randn(100).sum().item() * 0 + 1.0, 2.0), tmp_path / "k.json"
    )
    torch.testing.assert_close(torch.rand(3), expected)

    def broken() -> tuple[float, float]:
        raise RuntimeError("out of memory")

    with warnings_logged() as found:
        assert not calibrate.faster("b", broken, tmp_path / "k.json")
    assert any("could not be timed" in w for w in found)
    (tmp_path / "odd.json").write_text('{"x": [], "' + calibrate.machine_key() + '": {"c": 1}}')
    assert calibrate.cached("c", tmp_path / "odd.json") is None  # an odd cache is no cache


def test_kernel_model_generates_what_the_reference_does() -> None:
    """Decoding (one row: the split product) and a cached prefill give the reference's
    logits; greedy generation the same tokens."""
    ref, fast = model_pair(4096)
    ref.eval()
    fast.eval()
    apply_kernels(fast, "on")
    idx = torch.randint(0, 4096, (1, 6))
    with torch.inference_mode():
        caches = [KVCache.for_model(m, 1) for m in (ref, fast)]
        for t in range(6):
            a, b = (
                c.append(m, idx[:, : t + 1] if t == 0 else idx[:, t : t + 1])
                for c, m in zip(caches, (ref, fast), strict=True)
            )
            torch.testing.assert_close(b, a, **TOL)
    tokens = [torch.stack(list(generate(m, idx, 8, temperature=0.0))) for m in (ref, fast)]
    assert torch.equal(tokens[0], tokens[1])


def test_kernels_keep_names_shapes_and_tied_weights() -> None:
    ref, fast = model_pair(4096)
    apply_kernels(fast, "on")
    classes = [type(m) for m in fast.modules()]
    apply_kernels(fast, "on")  # again: nothing changes
    assert [type(m) for m in fast.modules()] == classes
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert fast.lm_head.weight is fast.transformer.wte.weight
    assert isinstance(fast.lm_head, loss_head.FusedLossHead)
    # a reference model built afterwards is untouched
    assert all(
        t.__module__.startswith(("torch.", "nanogpt_cli.model"))
        for t in {type(m) for m in GPT(ref.config).modules()}
    )


def test_off_and_other_devices_or_dtypes_leave_the_model_alone() -> None:
    ref, fast = model_pair(4096)
    assert apply_kernels(fast, "off") == []
    assert apply_kernels(fast.double(), "on") == []
    assert {type(m) for m in fast.modules()} == {type(m) for m in ref.modules()}


# dynamo's own use of torch.jit (deprecated; a FutureWarning from torch 2.15)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_under_torch_compile_the_kernels_step_aside() -> None:
    """A kernel-applied model still compiles as one graph (each kernel defers to torch's
    op while compiling), with the reference's loss; a compiled run applies none."""
    ref, fast = model_pair(4096)
    apply_kernels(fast, "on")
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    idx = torch.randint(0, 4096, (2, 16))
    _, loss = compiled(idx, idx, return_logits=False)
    torch.testing.assert_close(loss, ref(idx, idx)[1], **TOL)
    loss.backward()

    from nanogpt_cli.train.setup import build_step

    cfg = build_config("shakespeare-char", overrides={**TINY, "compile": True})
    parts = build_step(
        cfg, GPT(ModelConfig(**{**ref.config.__dict__})), torch.device("cpu"), torch.float32
    )
    assert parts.kernels == [] and parts.step.compiled


# -- falling back ---------------------------------------------------------------------------


def _fake_op(wrong: bool) -> Any:
    """The oneDNN op with its real signature, computing wrong values if ``wrong``."""
    real = torch.ops.mkldnn._linear_pointwise

    class Op:
        default = real.default

        def __call__(self, *args: Any) -> torch.Tensor:
            out = real(*args)
            return out + 1 if wrong else out

    return Op()


@pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("broken", ["missing", "wrong values"])
def test_a_broken_private_op_leaves_training_and_sampling_on_the_reference_path(
    broken: str,
    fresh_checks: None,
    monkeypatch: pytest.MonkeyPatch,
    tiny_options: dict[str, Any],
) -> None:
    """With the private op gone (or computing wrong values), a run trains and samples on
    torch's products, and says so once."""
    from nanogpt_cli.sample import Sampler
    from nanogpt_cli.train import train

    if broken == "missing":

        def missing() -> Any:
            raise AttributeError("no _linear_pointwise")

        monkeypatch.setattr(onednn_module, "_op", missing)
    else:
        monkeypatch.setattr(onednn_module, "_op", lambda: _fake_op(wrong=True))
    with warnings_logged() as found:
        result = train(
            build_config("shakespeare-char", overrides={**tiny_options, "cpu_kernels": "on"})
        )
        sampler = Sampler.from_checkpoint(result.out_dir, device="cpu", cpu_kernels="on")
        text = list(sampler.stream("a", 10, temperature=0.0))
    assert result.iter_num == TINY["max_iters"] and len(text) == 10
    assert not any(isinstance(m, linear.OneDNNLinear) for m in sampler.model.modules())
    kernel_warnings = [w for w in found if "CPU kernel" in w]
    assert len(kernel_warnings) == 1 and "onednn-linear" in kernel_warnings[0]


def test_a_kernel_that_fails_its_check_is_not_applied(
    fresh_checks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong() -> None:
        torch.testing.assert_close(torch.ones(2), torch.zeros(2))

    monkeypatch.setattr(gelu, "check", wrong)
    with warnings_logged() as found:
        _, fast = model_pair(65)
        applied = apply_kernels(fast, "on")
        apply_kernels(model_pair(65)[1], "on")  # checked once per process
    assert "sigmoid-gelu" not in applied
    assert not any(isinstance(m, gelu.SigmoidGELU) for m in fast.modules())
    assert len([w for w in found if "sigmoid-gelu" in w]) == 1


# -- the option and auto's calibration -------------------------------------------------------


def test_mode_is_checked_and_the_environment_is_its_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="--cpu-kernels 'fast': use one of auto, on, off"):
        kernel_mode("fast")
    monkeypatch.setenv("NANOGPT_CPU_KERNELS", "off")
    assert kernel_mode() == "off"
    assert build_config("shakespeare-char").system.cpu_kernels == "off"
    flag = build_config("shakespeare-char", overrides={"cpu_kernels": "on"})
    assert flag.system.cpu_kernels == "on"  # a flag beats the environment
    monkeypatch.setenv("NANOGPT_CPU_KERNELS", "fastest")
    with pytest.raises(ConfigError, match="NANOGPT_CPU_KERNELS: expected one of auto, on, off"):
        build_config("shakespeare-char")
    with pytest.raises(ConfigError, match="NANOGPT_CPU_KERNELS"):
        kernel_mode()
    # the variable it replaced still works
    monkeypatch.delenv("NANOGPT_CPU_KERNELS")
    monkeypatch.setenv("NANOGPT_CPU_MATMUL", "blas")
    assert kernel_mode() == "off"


def test_calibration_decides_by_the_margin_and_is_cached(tmp_path: Path) -> None:
    path = tmp_path / "kernels.json"
    measured: list[str] = []

    def timings(name: str, kernel_s: float) -> calibrate.Measure:
        def measure() -> tuple[float, float]:
            measured.append(name)
            return kernel_s, 1.0

        return measure

    assert calibrate.faster("a", timings("a", 0.96), path)  # at least 3% less
    assert not calibrate.faster("b", timings("b", 0.98), path)
    assert not calibrate.faster("c", timings("c", 1.5), path)
    # cached: measured once per machine
    assert calibrate.faster("a", timings("a", 9.0), path)
    assert not calibrate.faster("b", timings("b", 0.1), path)
    assert measured == ["a", "b", "c"]
    saved = json.loads(path.read_text())[calibrate.machine_key()]
    assert saved["a"]["on"] is True and saved["a"]["kernel_ms"] == 960.0
    assert saved["b"]["on"] is False and saved["b"]["reference_ms"] == 1000.0


def test_auto_turns_on_only_the_kernels_measured_faster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timings injected: the oneDNN products and the loss head measure faster, the split
    product and the sigmoid GELU slower; auto applies the first two and caches all four."""
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path))
    faster, slower = (lambda *a: (1.0, 2.0)), (lambda *a: (2.0, 1.0))
    monkeypatch.setattr(linear, "measure_onednn", faster)
    monkeypatch.setattr(linear, "measure_split", slower)
    monkeypatch.setattr(loss_head, "measure", faster)
    monkeypatch.setattr(gelu, "measure", slower)
    _, fast = model_pair(4096)
    applied = apply_kernels(fast, "auto")
    onednn = ["onednn-linear"] if HAS_ONEDNN else []
    assert applied == [*onednn, "loss-head"]
    assert isinstance(fast.lm_head, loss_head.FusedLossHead)
    assert fast.lm_head.fast_products is HAS_ONEDNN
    cached = json.loads((tmp_path / calibrate.CACHE_FILE).read_text())[calibrate.machine_key()]
    products = "onednn" if HAS_ONEDNN else "blas"
    assert {name: entry["on"] for name, entry in cached.items()} == {
        **({"onednn-linear": True} if HAS_ONEDNN else {}),
        **({f"split-linear ({products})": False} if torch.get_num_threads() >= 2 else {}),
        f"loss-head ({products})": True,
        "sigmoid-gelu": False,
    }

    def unexpected(*a: Any) -> tuple[float, float]:
        raise AssertionError("measured again")

    for name in ("measure_onednn", "measure_split"):
        monkeypatch.setattr(linear, name, unexpected)
    monkeypatch.setattr(loss_head, "measure", unexpected)
    monkeypatch.setattr(gelu, "measure", unexpected)
    assert apply_kernels(model_pair(4096)[1], "auto") == applied


# -- each kernel against torch's op ----------------------------------------------------------


@pytest.mark.parametrize(("out_features", "bias"), [(96, True), (97, False)])
def test_split_linear_equals_linear_and_only_decodes(
    out_features: int, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The split product is nn.Linear's, also when the features do not divide evenly; it
    is taken for a few rows under no_grad only (training keeps the usual path)."""
    monkeypatch.setattr(linear, "SPLIT_MIN_WEIGHT", 0)
    calls: list[int] = []
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a: calls.append(1) or bmm(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(32, out_features, bias=bias)
        kernels.swap(layer, linear.SplitLinear)
        x = torch.randn(3, 5, 32)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
        assert calls, "the split path was not taken"
        calls.clear()
        layer(x).sum().backward()  # training: always the plain path
        assert not calls and layer.weight.grad is not None
        with torch.no_grad():
            layer(torch.randn(2, 40, 32))  # 80 rows: too many to split
        assert not calls
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN linear")
def test_with_onednn_only_one_row_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear, "SPLIT_MIN_WEIGHT", 0)
    calls: list[str] = []
    bmm, product = torch.bmm, onednn_module._product
    monkeypatch.setattr(torch, "bmm", lambda *a: calls.append("split") or bmm(*a))
    monkeypatch.setattr(onednn_module, "_product", lambda *a: calls.append("onednn") or product(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = torch.nn.Linear(32, 96, bias=True)
        kernels.swap(layer, linear.OneDNNLinear)
        kernels.swap(layer, linear.SplitLinear)
        for rows, path in ((1, "split"), (2, "onednn")):
            x = torch.randn(rows, 1, 32)
            with torch.no_grad():
                y = layer(x)
            assert calls == [path]
            torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias))
            calls.clear()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("shape", [(64, 48), (256, 256)], ids=["small", "large"])
def test_sigmoid_gelu_matches_torch(approximate: str, shape: tuple[int, int]) -> None:
    # Large CPU inputs take the sigmoid form of the tanh approximation, small ones torch's.
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = gelu.SigmoidGELU(approximate)(x)
    ref = F.gelu(x, approximate=approximate)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn_like(ours)
    g1 = torch.autograd.grad(ours, x, grad)[0]
    g2 = torch.autograd.grad(ref, x, grad)[0]
    torch.testing.assert_close(g1, g2)


PRODUCTS = [
    pytest.param(
        True,
        id="onednn",
        marks=pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN"),
    ),
    pytest.param(False, id="blas"),
]


@pytest.mark.parametrize("fast_products", PRODUCTS)
def test_linear_cross_entropy_equals_the_usual_loss_and_gradients(fast_products: bool) -> None:
    """The loss head that never keeps the logits gives F.cross_entropy's loss and
    gradients, with ignored (-1) targets, a scaled loss, and no gradients under no_grad;
    with every target ignored, a NaN loss and zero gradients, as F.cross_entropy."""
    torch.manual_seed(0)
    h = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(30, 16, requires_grad=True)
    targets = torch.randint(0, 30, (40,))
    targets[::6] = -1
    ref = F.cross_entropy(h @ w.t(), targets, ignore_index=-1)
    (ref / 3).backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loss = linear_cross_entropy(h, w, targets, fast_products)
    (loss / 3).backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(h.grad, grads[0])
    torch.testing.assert_close(w.grad, grads[1])
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, targets, fast_products), ref)
    h.grad = w.grad = None
    loss = linear_cross_entropy(h, w, torch.full_like(targets, -1), fast_products)
    loss.backward()
    assert loss.isnan()
    assert not h.grad.any() and not w.grad.any()


@pytest.mark.parametrize("fast_products", PRODUCTS)
def test_linear_cross_entropy_stays_exact_where_a_targets_probability_underflows(
    fast_products: bool,
) -> None:
    """Confidently wrong predictions (a target 200 nats below the row's largest logit, so
    its float32 probability is 0) keep a finite, exact loss and the usual gradients: the
    log-sum-exp is not read off the target's probability."""
    torch.manual_seed(0)
    h = torch.randn(12, 8, dtype=torch.float64)
    h[:, 0] = 50.0
    w = torch.randn(30, 8, dtype=torch.float64)
    w[:, 0] = torch.linspace(-2.0, 2.0, 30, dtype=torch.float64)  # logits spread over 200
    targets = torch.zeros(12, dtype=torch.long)  # the least likely token of every row
    targets[-1] = 29  # and one row's most likely token
    h32 = h.float().requires_grad_()
    w32 = w.float().requires_grad_()
    ref = F.cross_entropy(h @ w.t(), targets)  # float64: exact to the float32 tolerance
    assert torch.softmax((h32 @ w32.t()).detach(), 1)[0, 0] == 0  # the probability is gone
    loss = linear_cross_entropy(h32, w32, targets, fast_products)
    loss.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=0)
    h_ref = h32.detach().clone().requires_grad_()
    w_ref = w32.detach().clone().requires_grad_()
    F.cross_entropy(h_ref @ w_ref.t(), targets).backward()
    torch.testing.assert_close(h32.grad, h_ref.grad)
    torch.testing.assert_close(w32.grad, w_ref.grad)


def test_linear_cross_entropy_computes_no_gradients_where_none_are_wanted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Evaluation (inference_mode, no_grad) and inputs that need no gradient take the plain
    loss: the fused head would compute both gradients in its forward pass for nothing."""
    calls: list[int] = []
    real = loss_head._LinearCrossEntropy.apply
    monkeypatch.setattr(
        loss_head._LinearCrossEntropy, "apply", lambda *a: calls.append(1) or real(*a)
    )
    torch.manual_seed(0)
    h = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(30, 16, requires_grad=True)
    targets = torch.randint(0, 30, (40,))
    ref = F.cross_entropy(h @ w.t(), targets)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            torch.testing.assert_close(linear_cross_entropy(h, w, targets), ref)
    plain = linear_cross_entropy(h.detach(), w.detach(), targets)
    torch.testing.assert_close(plain, ref.detach())
    assert calls == []
    linear_cross_entropy(h, w, targets).backward()
    assert calls == [1]
