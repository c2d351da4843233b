"""The public API can be learnt from `help()`: real signatures, docstrings that name every argument, reprs
that show a loss's settings, and the effective-rank guidance of the docstring holding as stated."""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from matrixssl import functional, losses
from matrixssl.losses import MatrixSSLLoss

DOCUMENTED_METHODS = ("forward", "terms", "multi_view_terms", "paper")


def public_functions() -> list[Callable[..., Any]]:
    return [
        getattr(functional, name)
        for name in functional.__all__
        if inspect.isfunction(getattr(functional, name))
    ]


def loss_classes() -> list[type[nn.Module]]:
    found = [getattr(losses, name) for name in losses.__all__]
    return [
        c for c in found if inspect.isclass(c) and issubclass(c, nn.Module) and c is not losses.EmbeddingLoss
    ]


def documented_callables() -> Iterator[tuple[str, Callable[..., Any], str]]:
    """(name, callable whose parameters must be documented, the docstring that documents them)."""
    for f in public_functions():
        yield f.__name__, f, inspect.getdoc(f) or ""
    for name in losses.__all__:
        obj = getattr(losses, name)
        if inspect.isfunction(obj):
            yield name, obj, inspect.getdoc(obj) or ""
        elif inspect.isclass(obj) and issubclass(obj, nn.Module):
            yield (
                name,
                obj.__init__,
                inspect.getdoc(obj) or "",
            )  # constructor arguments: in the class docstring
            for method in DOCUMENTED_METHODS:
                if method in vars(obj):
                    member = inspect.getattr_static(obj, method)
                    function = member.__func__ if isinstance(member, classmethod) else member
                    yield f"{name}.{method}", function, inspect.getdoc(function) or ""


def test_every_public_function_of_functional_shows_its_real_signature() -> None:
    functions = public_functions()
    assert len(functions) >= 10
    for f in functions:
        parameters = inspect.signature(f).parameters.values()
        kinds = {p.kind for p in parameters}
        assert inspect.Parameter.VAR_POSITIONAL not in kinds, f.__name__
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f.__name__
    signature = inspect.signature(functional.matrix_entropy)
    assert list(signature.parameters) == ["p", "method", "order"]
    assert signature.parameters["order"].default == 4
    text = pydoc.plain(pydoc.render_doc(functional.matrix_entropy))
    assert "matrix_entropy(p" in text and "*args" not in text and "-tr(P log P)" in text


def test_the_decorator_still_turns_autocast_off_also_for_keyword_tensors() -> None:
    a = torch.eye(3, dtype=torch.bfloat16) * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = functional.matrix_log(a=a)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.eye(3) * torch.log(torch.tensor(2.0)))


@pytest.mark.parametrize(
    "name, function, doc", [pytest.param(*entry, id=entry[0]) for entry in documented_callables()]
)
def test_docstrings_name_every_argument(name: str, function: Callable[..., Any], doc: str) -> None:
    assert doc.strip(), f"{name} has no docstring"
    arguments = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
    if arguments:
        assert "Args:" in doc, f"{name}'s docstring has no Args section"
    missing = [a for a in arguments if a not in doc]
    assert not missing, f"{name}'s docstring does not mention {missing}"


def test_every_public_class_and_function_has_its_own_docstring() -> None:
    for module in (functional, losses):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__ and obj.__doc__.strip(), f"{module.__name__}.{name}"


def test_loss_docstrings_give_input_shapes() -> None:
    for cls in loss_classes():
        assert "(B, d)" in (inspect.getdoc(cls.forward) or ""), cls.__name__


def test_matrix_ssl_repr_shows_its_settings_and_tells_the_paper_from_the_default() -> None:
    default, paper = repr(MatrixSSLLoss()), repr(MatrixSSLLoss.paper())
    assert default != paper
    for text in (default, paper):
        for setting in (
            "target_scale=",
            "ridge=",
            "gamma=",
            "taylor_order=",
            "trace_term=",
            "online_uniformity=",
        ):
            assert setting in text
    assert "target_scale=1.0" in default and "taylor_order=4" in default and "trace_term=False" in default
    assert "target_scale=None" in paper and "taylor_order=None" in paper and "trace_term=True" in paper
    assert "gamma=0.5" in repr(MatrixSSLLoss(gamma=0.5))


@pytest.mark.parametrize("cls", loss_classes(), ids=lambda c: c.__name__)
def test_every_loss_repr_lists_every_constructor_argument(cls: type[nn.Module]) -> None:
    loss = cls()
    text = repr(loss)
    assert text.startswith(f"{cls.__name__}(")
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name != "self":
            assert f"{name}={parameter.default!r}" in text, (name, text)


def test_effective_rank_of_covariance_is_below_that_of_the_centred_embeddings() -> None:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(256, 32, generator=generator, dtype=torch.float64) @ torch.randn(
        32, 32, generator=generator, dtype=torch.float64
    )
    of_covariance = functional.effective_rank(functional.covariance(z))
    of_embeddings = functional.effective_rank(functional.centred(z))
    assert of_covariance < of_embeddings
    # Equal spectra are the one case where they agree: orthogonal centred columns of equal norm.
    q, _ = torch.linalg.qr(functional.centred(torch.randn(64, 8, generator=generator, dtype=torch.float64)))
    torch.testing.assert_close(
        functional.effective_rank(functional.covariance(q)), torch.tensor(8.0, dtype=torch.float64)
    )
    torch.testing.assert_close(functional.effective_rank(q), torch.tensor(8.0, dtype=torch.float64))
    doc = inspect.getdoc(functional.effective_rank) or ""
    assert "effective_rank(covariance(z))" in doc and "RankMe" in doc
