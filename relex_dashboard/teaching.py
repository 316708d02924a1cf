""""How to read this": a short, collapsible note on each page, for a student who knows linear algebra
but not the RELEX paper. Notation: θₜ are the weights at step t, θ₀ the base, Δₜ = θₜ − θ₀ the update
so far; the window is the range of checkpoints the method learns from.

The notes are plain Markdown without LaTeX (Unicode subscripts), so they read the same in the
offline HTML reports' source and in the app.
"""

import streamlit as st

NOTES = {
    "Overview": """
The first chart shows how far the weights have moved from the base, ‖θₜ − θ₀‖, against the training
step; the second how fast, ‖θₜ − θₜ₋₁‖ per step. RELEX assumes a nearly constant speed along one
direction, so a steadily rising distance and flat speed bars are the good sign. A kink in the distance,
or speed bars that shrink over the run, mean the run changed regime: a line fitted to a window before
the change will overshoot what comes after it.
""",
    "Spectra": """
Stack a tensor's updates Δₜ of the window as the rows of a matrix and take its singular values: the
trajectory spectrum. If σ₁ holds almost all the energy (rank-1 energy σ₁²/Σσ² close to 1), the weights
moved along one fixed direction and only the distance along it changed, which is what makes
extrapolation possible. Low rank-1 energy in a layer or module means its updates turn over time. The
per-matrix view asks a different question: whether one update ΔW is itself a low-rank matrix. The
changed-elements chart shows how much of each saved checkpoint differs from the base at all: at RL
learning rates a bf16 checkpoint can keep most weights unchanged, because the steps were smaller than
bf16's spacing.
""",
    "Trajectory": """
Each dot is a checkpoint's coordinate cₖ(t) = ⟨Δₜ, vₖ⟩ on the window's k-th direction, and the curve is
the trend fitted to the window (a line by default), carried past it. Good: the dots after the window
stay on the extrapolated curve (R² after the window close to the in-window R²). Bad: a curve that fits
the window well but bends away from the later dots, typical of high-degree polynomials or a sinusoid,
whose in-window R² says nothing about the future. R² after the window compares the errors with the
spread of the later dots around their own mean, as the paper's plot script does, so over a short
stretch it can be far below 0 while the relative error is modest.
""",
    "Window": """
The backtest treats the checkpoints after the window as unknown, predicts them, and reports the
relative error ‖prediction − Δᵢ‖/‖Δᵢ‖ for RELEX, for the last observed checkpoint (`last`) and for the
straight line through the base and it (`linear`). RELEX is worth using where its curve lies below
`last`. The principal angles between a growing window's subspace and the reference's (cosines near 1)
say whether the window has already found the run's direction.

**What the projection discards.** For every checkpoint, the energy of Δₜ outside the window's rank-k
subspace, ‖Δₜ‖² − Σₖ cₖ(t)², is what RELEX's prediction cannot contain: its error is exactly this part
plus the error of the fitted coefficients inside the subspace. The `last` baseline's error Δ_L − Δₜ
has a part outside the subspace too. When the discarded energy is noise that does not persist, RELEX
beats `last` by throwing it away; when the part outside the subspace keeps growing with t (a second
direction the window missed), `last` keeps it and RELEX cannot.
""",
    "Export": """
The exported checkpoint is θ₀ plus a weighted sum of the window's updates, θ̂ = θ₀ + Σₜ wₜ Δₜ, and the
chart shows those weights. Weights that grow smoothly towards the latest checkpoints are a healthy
sign; large weights of alternating sign mean the prediction cancels big updates against each other,
so it amplifies their noise and deserves a backtest before use. The largest |w| measures how far the
export leans on extrapolation. The rounding loss says how much of the predicted update rounding to the
output dtype erased.
""",
    "Evaluate": """
The run's real checkpoints are scored beside RELEX's extrapolations from a window, each point with ±1
standard error. The **RL checkpoints** line is what training actually reached; each **relex from window
W** series is checkpoints extrapolated from that window alone, at their target steps. A good result is
an extrapolated checkpoint that scores like the real checkpoint at the same step, and above the dotted
**last of window W**: keeping the window's last checkpoint is what you would do without RELEX. A score
that falls as the target moves further out shows how far ahead the trend can be trusted. The table
gives each difference with its standard error: differences smaller than about two standard errors are
noise. Scores of every window stay, so move the window, score again, and compare.
""",
}


def how_to_read(page: str) -> None:
    """The page's note in a closed expander, right under its title."""
    with st.expander("How to read this"):
        st.markdown(NOTES[page].strip())
