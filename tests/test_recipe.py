"""The translation recipe as public parameters: one field, one default, one doc text (``recipe_parameters``)."""

import inspect
import re
from dataclasses import fields

import pytest

import morphst as mst
from morphst._docs import document_parameters
from morphst.tl._translation import RECIPE, Recipe, recipe_parameters

ALL = [f.name for f in fields(Recipe)]
#: The Recipe fields each public function takes, and its own defaults where they differ from the field's.
INTENDED = {
    "predict_expression": (ALL, {}),
    "fit_translator": (ALL, {}),
    "learn_translation_features": (
        [f.name for f in fields(Recipe) if f.metadata["group"] in ("inputs", "context")] + ["random_state"],
        {"spatial_context": 8, "global_context": True},
    ),
}


def _entries(doc: str) -> dict[str, str]:
    """The numpydoc Parameters entries of ``doc``: name -> description on one line (whitespace collapsed)."""
    section = inspect.cleandoc(doc).split("Parameters\n----------\n", 1)[1]
    section = re.split(r"\n\w+\n-+\n", section, maxsplit=1)[0]
    out, name = {}, None
    for line in section.split("\n"):
        if line.strip() and not line.startswith(" "):
            name = line.strip()
            out[name] = ""
        elif line.strip():
            out[name] += " " + line.strip()
    return {k: v.strip() for k, v in out.items()}


@pytest.mark.parametrize("name", list(INTENDED))
def test_public_functions_take_the_intended_recipe_fields_with_their_defaults_and_docs(name):
    fn = getattr(mst.tl, name)
    intended, own_defaults = INTENDED[name]
    params = inspect.signature(fn).parameters
    assert sorted(n for n in params if n in ALL) == sorted(intended)
    by_name = {f.name: f for f in fields(Recipe)}
    entries = _entries(fn.__doc__)
    assert list(entries) == list(params)  # every parameter documented, in the order of the signature
    for n in intended:
        assert params[n].default == own_defaults.get(n, by_name[n].default), n
        assert params[n].annotation == by_name[n].type, n
        assert entries[n].startswith(" ".join(by_name[n].metadata["doc"].split())), n
    assert params["use_rep"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[2:])
    assert "recipe" not in params
    assert ("model" in params) == ("regressor" in intended)  # the deprecated keyword, last
    if "model" in params:
        assert list(params)[-1] == "model"
        assert params["model"].default is None


def test_calls_are_bound_like_python_and_the_recipe_checked_before_the_data_are_read():
    """Binding and the recipe's checks come first: ``data=None`` is never reached by these calls."""
    with pytest.raises(TypeError, match=r"^predict_expression\(\) got an unexpected keyword argument 'n_split'$"):
        mst.tl.predict_expression(None, "X_feat", n_split=3)
    with pytest.raises(TypeError, match=r"^fit_translator\(\) too many positional arguments$"):
        mst.tl.fit_translator(None, "X_feat", "ridge")
    with pytest.raises(TypeError, match=r"^fit_translator\(\) multiple values for argument 'use_rep'$"):
        mst.tl.fit_translator(None, "X_feat", use_rep="X_feat")
    with pytest.raises(TypeError, match=r"^learn_translation_features\(\) got an unexpected keyword argument 'alphas'"):
        mst.tl.learn_translation_features(None, "X_feat", alphas=[1.0])  # not a parameter there
    with pytest.raises(ValueError, match="alphas"):
        mst.tl.predict_expression(None, "X_feat", alphas=[])
    with pytest.raises(ValueError, match="spatial_context"):
        mst.tl.learn_translation_features(None, spatial_context=0.5)
    with pytest.warns(FutureWarning, match=r"`fit_translator\(model=\.\.\.\)` is now `regressor=`") as rec:
        with pytest.raises(ValueError, match="Unknown `regressor`"):
            mst.tl.fit_translator(None, "X_feat", model="nope")
    assert rec[0].filename == __file__  # the warning points at the caller's line


def test_recipe_parameters_places_a_group_at_recipe_and_passes_a_checked_recipe():
    @recipe_parameters(groups=("context",), defaults={"global_context": True})
    def f(data, use_rep=RECIPE, *, recipe, key_added="k"):
        """Toy.

        Parameters
        ----------
        data
            Anything.
        key_added
            Key.
        """
        return use_rep, recipe, key_added

    params = inspect.signature(f).parameters
    context = [n for n in ALL if Recipe.__dataclass_fields__[n].metadata["group"] == "context"]
    assert list(params) == ["data", "use_rep", *context, "key_added"]
    assert params["global_context"].default is True
    use_rep, recipe, key = f(None, "X", spatial_context=3.0, context_rep=["a", "b"])
    assert (use_rep, key) == ("X", "k")
    assert (recipe.spatial_context, recipe.context_rep, recipe.global_context) == (3, ("a", "b"), True)
    assert recipe.regressor == "ridge"  # a field the function does not take: its default
    with pytest.raises(ValueError, match="spatial_context"):
        f(None, spatial_context=-1)
    entries = _entries(f.__doc__)
    assert list(entries) == list(params)
    assert entries["use_rep"] == " ".join(Recipe.__dataclass_fields__["use_rep"].metadata["doc"].split())


def test_recipe_parameters_refuses_a_function_it_cannot_serve():
    with pytest.raises(TypeError, match="declare a keyword-only `recipe`"):

        @recipe_parameters()
        def no_recipe(data, *, key_added="k"):
            """Toy."""

    with pytest.raises(TypeError, match="spatial_contxt"):

        @recipe_parameters(groups=(), defaults={"spatial_contxt": 3})
        def typo(data, *, recipe):
            """Toy."""


def test_document_parameters_rewrites_the_section_in_signature_order_and_refuses_gaps():
    doc = "Toy.\n\n    Parameters\n    ----------\n    b\n        Own b.\n    a\n        More on a.\n\n    Returns\n    -------\n    x\n"
    out = document_parameters(doc, ["a", "b"], {"a": "Shared a,\nsecond line."}, "toy")
    assert out == (
        "Toy.\n\n    Parameters\n    ----------\n    a\n        Shared a,\n        second line.\n        More on a.\n"
        "    b\n        Own b.\n\n    Returns\n    -------\n    x\n"
    )
    with pytest.raises(ValueError, match=r"without text: \['c'\]"):
        document_parameters(doc, ["a", "b", "c"], {}, "toy")
    with pytest.raises(ValueError, match=r"not a parameter: \['b'\]"):
        document_parameters(doc, ["a"], {}, "toy")
