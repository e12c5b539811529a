"""Figures: plotly figures and HTML built from plain data: a run's Trace (run), the unit analyses (units) and the
What-if comparisons (whatif). Each builder takes the data and nothing else from the model, so each is tested
without a browser."""
