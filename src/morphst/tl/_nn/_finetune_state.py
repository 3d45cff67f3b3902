"""A fitted :class:`LastBlockFinetune` as arrays, numbers and strings, and back (the translator file's hooks).

:func:`saved_state` writes the parameters, the fitted attributes, the standardisation and each member's block and
head ``state_dict`` (every unit of the block, frozen ones included); :func:`rebuild` builds the architecture from
the registry / timm by name with a throw-away random initialisation (no weights file, no hub) and loads them.
:mod:`morphst.tl._translation._io` calls them through ``LastBlockFinetune._saved_state`` / ``_from_saved_state``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._finetune import _head_blocks

#: Fitted attributes saved as they are (arrays, numbers, strings); ``module_``, ``mu_`` and ``sd_`` are converted.
SAVED_ATTRIBUTES = (
    "n_members_", "curve_", "chosen_epochs_", "head_epochs_", "chosen_epoch_", "head_epoch_", "validation_",
    "weights_sha256_", "pooling_", "tok_mean_", "tok_scale_", "y_mean_", "y_scale_", "n_features_in_",
)  # fmt: skip


def saved_state(est) -> dict[str, Any]:
    """The fitted state of ``est`` as arrays, numbers and strings.

    Raises
    ------
    TypeError
        When ``model`` is a torch module: its architecture cannot be rebuilt from a file.
    """
    if not isinstance(est.model, str):
        msg = (
            f"its LastBlockFinetune was fit with a {type(est.model).__name__} module as `model`, whose "
            "architecture cannot be rebuilt from a file. Fit with model='<registry name>' (a name of "
            "`mst.tl.models.list_models()` or a timm architecture, e.g. model='densenet121') to save"
        )
        raise TypeError(msg)

    def arrays(module) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}

    params = est.get_params(deep=False)
    for k in ("weights", "device"):  # a path or a torch.device, kept as text
        params[k] = None if params[k] is None else str(params[k])
    return {
        "params": params,
        "fitted": {k: getattr(est, k) for k in SAVED_ATTRIBUTES},
        "mu": [m.numpy().copy() for m in est.mu_],
        "sd": [s.numpy().copy() for s in est.sd_],
        "members": [{"block": arrays(m["block"]), "head": arrays(m["head"])} for m in est._members()],
    }


def rebuild(cls, state: dict[str, Any]):
    """A fitted ``cls`` (:class:`LastBlockFinetune`) from :func:`saved_state`, predicting exactly as the saved one.

    The architecture from the registry / timm by name (``weights="random"``: no file, no hub request), built on torch's
    meta device (no memory, no initialisation: a foundation model's trunk is never materialised), then each
    member's saved ``state_dict`` assigned to its block (strict: every key and shape must fit); a block with a
    tensor that is not in its ``state_dict`` is built on the CPU instead. The caller's torch random state is left
    as it was.

    Raises
    ------
    ValueError
        When the saved weights do not fit the architecture named.
    """
    import torch

    from ..models import get_model
    from ..models._weights import hf_offline_mode

    est = cls(**state["params"])
    for k in SAVED_ATTRIBUTES:
        setattr(est, k, state["fitted"][k])
    est.mu_ = [torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in state["mu"]]
    est.sd_ = [torch.from_numpy(np.asarray(s, dtype=np.float32)) for s in state["sd"]]
    blocks = _head_blocks([len(m) for m in est.mu_], len(est.tok_mean_))
    n_in, n_out = sum(w for _, w in blocks), len(est.y_mean_)
    members = []
    # the throw-away initialisation leaves the caller's seed alone; no HTTP request (an "hf-hub:" timm name: its
    # configuration from the local Hugging Face cache)
    with torch.random.fork_rng(devices=[]), hf_offline_mode():
        with torch.device("meta"):
            on_meta = get_model(est.model, weights="random").module
        on_cpu = None
        for i, saved in enumerate(state["members"]):
            with torch.device("meta"):
                block = est._block_from(on_meta, est.pooling_, 0)
            _load(block, saved["block"], f"block of member {i}", est.model, assign=True)
            if any(t.is_meta for t in (*block.parameters(), *block.buffers())):  # not all in its state_dict
                if on_cpu is None:
                    on_cpu = get_model(est.model, weights="random").module
                block = est._block_from(on_cpu, est.pooling_, 0)
                _load(block, saved["block"], f"block of member {i}", est.model)
            head = est._head(blocks, 0)._network(n_in, n_out)
            _load(head, saved["head"], f"head of member {i}", est.model)
            members.append(torch.nn.ModuleDict({"block": block.eval(), "head": head.eval()}))
    est.module_ = members[0] if len(members) == 1 else torch.nn.ModuleList(members)
    return est


def _load(net, saved: dict, what: str, model: str, *, assign: bool = False) -> None:
    import torch

    try:
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in saved.items()}, assign=assign)
    except RuntimeError as e:
        msg = f"the saved {what} does not fit {model!r}: {str(e)[:300]}"
        raise ValueError(msg) from None


__all__ = ["SAVED_ATTRIBUTES", "rebuild", "saved_state"]
