"""The optimizer is built with its fused kernel unless the user chose a kernel."""

from __future__ import annotations

import functools

import pytest
import torch

from segmend.optim import build_fused_if_supported, default_optimizer


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((7, 5), (5,), (3, 3, 3, 3))]


def _run(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int = 5) -> list[torch.Tensor]:
    for step in range(steps):
        optimizer.zero_grad()
        loss = sum(((p - step) ** 2).sum() for p in params)
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize(
    "factory",
    [
        functools.partial(torch.optim.AdamW, lr=0.003, weight_decay=1e-4),
        functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        default_optimizer,
    ],
    ids=["AdamW", "SGD", "default"],
)
def test_fused_when_no_kernel_was_chosen_and_same_update(factory) -> None:
    fused_params, plain_params = _params(), _params()
    fused = build_fused_if_supported(factory, fused_params)
    plain = factory(plain_params)
    assert fused.defaults["fused"] is True
    assert not plain.defaults.get("fused")
    for got, expected in zip(_run(fused, fused_params), _run(plain, plain_params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("choice", [{"fused": False}, {"foreach": True}, {"foreach": False}])
def test_a_kernel_the_user_chose_is_kept(choice) -> None:
    optimizer = build_fused_if_supported(functools.partial(torch.optim.AdamW, lr=0.01, **choice), _params())
    for key, value in choice.items():
        assert optimizer.defaults[key] is value
    assert not optimizer.defaults["fused"]


def test_parameter_groups_and_negative_lr_survive_the_rebuild() -> None:
    params = _params()
    groups = [{"params": params[:2], "name": "net"}, {"params": params[2:], "name": "arm", "lr": -0.5}]
    optimizer = build_fused_if_supported(functools.partial(torch.optim.SGD, lr=0.1), groups)
    assert optimizer.defaults["fused"] is True
    assert [group["name"] for group in optimizer.param_groups] == ["net", "arm"]
    before = params[2].detach().clone()
    params[2].grad = torch.ones_like(params[2])
    for p in params[:2]:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(params[2].detach(), before + 0.5)  # a negative lr ascends


def test_factories_without_fused_fall_back_to_what_they_built() -> None:
    no_kwargs = build_fused_if_supported(lambda p: torch.optim.SGD(p, lr=0.1), _params())
    assert not no_kwargs.defaults["fused"]
    no_kernel = build_fused_if_supported(functools.partial(torch.optim.LBFGS, lr=0.1), _params())
    assert isinstance(no_kernel, torch.optim.LBFGS)


def test_no_fused_kernel_on_cpu_under_a_gradient_scaler() -> None:
    params = _params()
    optimizer = build_fused_if_supported(torch.optim.AdamW, params, gradient_scaling=True)
    assert not optimizer.defaults["fused"]
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(sum(p.sum() for p in params)).backward()
    scaler.step(optimizer)  # a fused CPU kernel would refuse the scaler's grad_scale here
