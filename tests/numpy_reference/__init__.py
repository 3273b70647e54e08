"""Plain float64 NumPy statements of the spec's formulas, the references the tests compare to."""
