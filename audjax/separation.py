"""Domain separation and reconstruction: the two rounds of the paper's Fig. 1 (docs/design.md §3).

Round 1 separates each face's features F = tanh(E_f(I)) into landmark attention A = E_l(F) and
background B = G_b(F), then swaps the backgrounds across the domains with G_st:

    F_sltb = G_st(A_s, B_t)    the source's landmarks on the target's background
    F_sbtl = G_st(A_t, B_s)    the target's landmarks on the source's background

Round 2 separates the recombined features again and swaps back, giving the cross-cycle
reconstructions F'_s = G_st(E_l(F_sltb), G_b(F_sbtl)) and F'_t likewise.

`two_rounds` is written once, for every caller: the joint training step (`audjax.steps`), the
Fig. 1 figure of a real pair of faces (`audjax.inference.figure`), and the target prediction path
(`audjax.inference.paths`, round 1 without the swap). The gradient stops of training are part
of it (G_b reads stopped features, G_st stopped attention, and round 2's E_l runs through
`apply(..., frozen=True)`, ADLD's frozen copy of E_l); in evaluation they change no value.
"""

from typing import NamedTuple, Protocol

import jax

sg = jax.lax.stop_gradient


class Apply(Protocol):
    """Runs network `name` on `args` and returns its output. `frozen=True` runs it with its
    parameters under stop-gradient (round 2's E_l); outside training it may ignore the flag."""

    def __call__(self, name: str, *args, frozen: bool = False): ...


def separate(apply: Apply, features, *, frozen: bool = False):
    """(A, logits, B): E_l's attention maps (B, s, s, L) and logits, and G_b's background of
    `features`. G_b reads them under stop-gradient, so only E_l trains E_f through this split."""
    attention, logits = apply("E_l", features, frozen=frozen)
    return attention, logits, apply("G_b", sg(features))


def recombine(apply: Apply, attention, background):
    """G_st(A, B): features with the landmarks of `attention` on `background`. The attention is
    stopped: G_st trains the background side, E_l is trained by L_l alone."""
    return apply("G_st", sg(attention), background)


class Rounds(NamedTuple):
    """Every feature of Fig. 1. Round 1: A_s, A_t (F_sl, F_tl) with their logits, B_s, B_t (F_sb,
    F_tb), F_sltb, F_sbtl. Round 2 (primed in the paper, `2` here): the separation of the
    recombinations, A2_s = E_l(F_sltb), B2_t = G_b(F_sltb), A2_t = E_l(F_sbtl), B2_s =
    G_b(F_sbtl), and the cross-cycle reconstructions F2_s = F'_s, F2_t = F'_t."""

    A_s: jax.Array
    logits_s: jax.Array
    A_t: jax.Array
    logits_t: jax.Array
    B_s: jax.Array
    B_t: jax.Array
    F_sltb: jax.Array
    F_sbtl: jax.Array
    A2_s: jax.Array
    logits2_s: jax.Array
    A2_t: jax.Array
    logits2_t: jax.Array
    B2_s: jax.Array
    B2_t: jax.Array
    F2_s: jax.Array
    F2_t: jax.Array


def two_rounds(apply: Apply, F_s, F_t) -> Rounds:
    """Rounds 1 and 2 of Fig. 1 on source features `F_s` and target features `F_t`.

    Round 2's E_l runs frozen: it trains the generators that made its input, not E_l itself.
    The calls keep ADLD's order (both E_l, then both G_b, then both G_st, in each round)."""
    (A_s, logits_s), (A_t, logits_t) = apply("E_l", F_s), apply("E_l", F_t)
    B_s, B_t = apply("G_b", sg(F_s)), apply("G_b", sg(F_t))
    F_sltb, F_sbtl = recombine(apply, A_s, B_t), recombine(apply, A_t, B_s)
    A2_s, logits2_s = apply("E_l", F_sltb, frozen=True)
    A2_t, logits2_t = apply("E_l", F_sbtl, frozen=True)
    B2_t, B2_s = apply("G_b", sg(F_sltb)), apply("G_b", sg(F_sbtl))
    F2_s, F2_t = recombine(apply, A2_s, B2_s), recombine(apply, A2_t, B2_t)
    return Rounds(A_s, logits_s, A_t, logits_t, B_s, B_t, F_sltb, F_sbtl,
                  A2_s, logits2_s, A2_t, logits2_t, B2_s, B2_t, F2_s, F2_t)
