"""A live, read-only web page for the searches of a store: `python -m controller dashboard --store URI`, and the
operator's own port in the chart (data: what is read and how often; server: HTTP, JSON and events; static/: the
page, with no asset from elsewhere)."""
