"""Building blocks of results pages: markdown tables, PNG plots (plots.py), a self-contained report.html
(html.py). An experiment's report is assembled from them in r1lab.experiments.report."""
