"""PyTorch's default initialisation, applied to a Flax parameter tree (`--init=torch`).

ADLD's networks start from PyTorch's defaults. For `nn.Conv2d` and `nn.Linear` these are

    weight ~ U(-b, b),  b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)), a = sqrt(5)
           = U(-1/sqrt(fan_in), 1/sqrt(fan_in))          (kaiming_uniform_ with a = sqrt(5))
    bias   ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))

so a weight's standard deviation is 1 / sqrt(3 fan_in), while Flax's `lecun_normal` gives
1 / sqrt(fan_in): the last, unnormalised layers of E_l, D_l, D_d and E_au would start sqrt(3)
times larger, which changes the early dynamics of the adversarial games. Batch-norm scales (1) and
offsets (0) and PReLU slopes (0.25) already match PyTorch and are left alone.

A kernel's fan-in is the product of all its dimensions but the last (HWIO convs, (in, out)
dense layers); for E_au's grouped convs (3, 3, C_in, K * C_out) that is each branch's own fan-in.
"""

import math

import jax

from audjax import seeds


def _uniform(key, shape, bound, dtype):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_init(params: dict, key) -> dict:
    """Re-draw every kernel `<p>kernel` and its bias `<p>bias` in `params` as PyTorch would.

    Kernels are the leaves named `kernel` or ending in `_kernel` (E_au's `fc_kernel`); the bias of
    kernel `<p>kernel` is the sibling `<p>bias`. Each leaf gets its own key, folded from its path,
    so the result does not depend on dict order. Other leaves are returned unchanged.

    >>> p = {"conv": {"kernel": jax.numpy.zeros((3, 3, 4, 8)), "bias": jax.numpy.zeros(8)}}
    >>> new = torch_default_init(p, jax.random.PRNGKey(0))
    >>> float(abs(new["conv"]["bias"]).max()) <= 1 / math.sqrt(3 * 3 * 4)
    True
    """

    def walk(tree, path):
        out = {}
        for name, value in tree.items():
            if isinstance(value, dict):
                out[name] = walk(value, f"{path}/{name}")
            else:
                out[name] = value
        for name, value in tree.items():
            if isinstance(value, dict) or not (name == "kernel" or name.endswith("_kernel")):
                continue
            bound = 1.0 / math.sqrt(math.prod(value.shape[:-1]))
            k = jax.random.fold_in(key, seeds.path_id(f"{path}/{name}"))
            out[name] = _uniform(k, value.shape, bound, value.dtype)
            bias = name.removesuffix("kernel") + "bias"
            if bias in tree:
                kb = jax.random.fold_in(key, seeds.path_id(f"{path}/{bias}"))
                out[bias] = _uniform(kb, tree[bias].shape, bound, tree[bias].dtype)
        return out

    return walk(dict(params), "")
