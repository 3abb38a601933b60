"""What a search shows the outside world: the publisher (status.json, best.json, report/), the status table and best
trial, the HTML report, its drawing process and the Prometheus metrics.
"""
