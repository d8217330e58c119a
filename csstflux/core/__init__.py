"""Pure-numpy maths that is not about one spectrum: GPR, 2D polynomials, cross-matching."""
