"""The paper's Fig. 1 for a real pair of faces
(`audjax visualize --run RUN SOURCE_IMAGE TARGET_IMAGE --out FIG.png`).

Both faces are found, aligned and centre-cropped as `audjax.Detector` does (or taken as they are
with `--aligned`), then run through rounds 1 and 2 of the separation (docs/design.md §3) in
evaluation mode. One row per face (source, target):

1. the aligned crop;
2. E_l's attention (F_sl, F_tl), summed over the landmarks, over the crop;
3. the features F = E_f(I) and 4. the background B = G_b(F), as channel means;
5. the recombination with the other face's background: F_sltb (source landmarks, target
   background) in the source row, F_sbtl in the target row;
6. the cross-cycle reconstruction F'_s = G_st(E_l(F_sltb), G_b(F_sbtl)) (F'_t likewise) and
   7. its L1 error |F' - F|, channel mean;
8. E_au's probabilities: the face through the source path E_au(F) and the target path
   E_au(G_st(E_l(F), G_b(F))), and the row's recombined features through E_au.

Feature maps share one symmetric colour scale; the error maps share one from 0. Needs a joint
run with E_l, G_b and G_st (models A, B, C), matplotlib (extra `plot`) and, for photos, dlib
(extra `annotate`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from audjax import separation
from audjax.inference import media, paths
from audjax.tools.plot import _pyplot, save_figure

NEEDED = ("E_f", "E_l", "G_b", "G_st", "E_au")


def cross_cycle(config, nets, params, batch_stats, image_s, image_t) -> dict:
    """Every feature of Fig. 1 for source crops `image_s` and target crops `image_t` (B, S, S,
    3), in evaluation mode, and E_au's probabilities (module doc)."""

    apply = paths.evaluation_apply(nets, params, batch_stats)
    F_s, F_t = paths.features(apply, image_s), paths.features(apply, image_t)
    r = separation.two_rounds(apply, F_s, F_t)

    def au(path, images):
        return paths.predict_au(config, nets, params, batch_stats, images, path)

    probs = {"s_source_path": au("source", image_s), "s_target_path": au("target", image_s),
             "t_source_path": au("source", image_t), "t_target_path": au("target", image_t),
             "F_sltb": jax.nn.sigmoid(apply("E_au", r.F_sltb)),
             "F_sbtl": jax.nn.sigmoid(apply("E_au", r.F_sbtl))}
    return {"F_s": F_s, "F_t": F_t, "A_s": r.A_s, "A_t": r.A_t, "B_s": r.B_s, "B_t": r.B_t,
            "F_sltb": r.F_sltb, "F_sbtl": r.F_sbtl, "F2_s": r.F2_s, "F2_t": r.F2_t,
            "probs": probs}


def face_crop(detector, image_bgr, aligned: bool, name: str) -> np.ndarray:
    """The most confident face of an image, as the (S, S, 3) crop the networks read."""
    faces = [f for f in detector.faces(image_bgr, aligned) if f.crop is not None]
    if not faces:
        raise ValueError(f"{name}: no face found")
    return faces[0].crop


def figure(detector, source_bgr, target_bgr, out, aligned: bool = False,
           names=("source", "target")):
    """Draw the figure of the module doc for two BGR images and write it to `out`."""
    missing = [n for n in NEEDED if n not in detector.networks]
    if missing:
        raise ValueError(f"{detector.checkpoint}: the figure needs a joint run with "
                         f"{', '.join(NEEDED)}; this one lacks {', '.join(missing)}")
    crops = [face_crop(detector, img, aligned, n)[None]
             for img, n in ((source_bgr, names[0]), (target_bgr, names[1]))]
    fn = jax.jit(functools.partial(cross_cycle, detector.config, detector.nets))
    r = jax.device_get(fn(detector.params, detector.batch_stats, *crops))
    r = jax.tree.map(lambda x: np.asarray(x)[0], r)

    plt = _pyplot()
    rows = [("source", crops[0][0], "s", "F_sltb", "F'_s"),
            ("target", crops[1][0], "t", "F_sbtl", "F'_t")]
    features = [r[k] for k in ("F_s", "F_t", "B_s", "B_t", "F_sltb", "F_sbtl", "F2_s", "F2_t")]
    vmax = max(float(np.abs(f.mean(-1)).max()) for f in features) or 1.0
    errors = {d: np.abs(r[f"F2_{d}"] - r[f"F_{d}"]).mean(-1) for d in ("s", "t")}
    emax = max(float(e.max()) for e in errors.values()) or 1.0
    fig, axes = plt.subplots(2, 8, figsize=(24, 6.4),
                             gridspec_kw={"width_ratios": [1] * 7 + [1.6]})
    for (label, crop, d, recombined, recon), ax in zip(rows, axes, strict=True):
        rgb = (crop + 1.0) / 2.0
        attention = r[f"A_{d}"].sum(-1)
        ax[0].imshow(rgb)
        ax[0].set_title(f"{label} face (aligned crop)")
        ax[1].imshow(rgb)
        # The s x s map over the S x S crop, cell j centred on crop pixel 4j: the pixel
        # training taught it to mark (see audjax.inference.detector).
        size, half = rgb.shape[0], 2.0
        ax[1].imshow(attention, cmap="inferno", alpha=0.6,
                     extent=(-half, size - half, size - half, -half))
        ax[1].set_title(f"E_l attention F_{d}l (sum)")
        for i, (key, title) in enumerate(((f"F_{d}", f"F_{d} = E_f(I)"),
                                          (f"B_{d}", f"background F_{d}b = G_b"),
                                          (recombined, recombined),
                                          (f"F2_{d}", f"reconstruction {recon}")), start=2):
            ax[i].imshow(r[key].mean(-1), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax[i].set_title(title)
        ax[6].imshow(errors[d], cmap="magma", vmin=0, vmax=emax)
        ax[6].set_title(f"|{recon} - F_{d}| (mean {errors[d].mean():.3f})")
        for a in ax[:7]:
            a.axis("off")
        _au_bars(ax[7], detector.au_columns, {
            f"{label}, source path": r["probs"][f"{d}_source_path"],
            f"{label}, target path": r["probs"][f"{d}_target_path"],
            f"{recombined}": r["probs"][recombined]})
    fig.suptitle(f"{detector.checkpoint}: feature maps are channel means (colour scale "
                 f"±{vmax:.2f}); error maps 0-{emax:.2f}")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return r


def _au_bars(ax, au_columns, probs: dict):
    width = 0.8 / len(probs)
    for i, (label, p) in enumerate(probs.items()):
        ys = [k + (i - (len(probs) - 1) / 2) * width for k in range(len(au_columns))]
        ax.barh(ys, p, width, label=label)
    ax.set_yticks(range(len(au_columns)), au_columns)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_title("AU probabilities")
    ax.legend(fontsize="x-small", loc="lower right")



def read_image(name) -> np.ndarray:
    """The first frame of an image (or video) file, BGR; ValueError names an unreadable one."""
    frame = next(media.iter_frames([name]))
    if frame.error is not None:
        raise ValueError(f"{name}: {frame.error}")
    return frame.image
