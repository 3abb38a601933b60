"""Typed settings, loaded and range-checked once at the edge: the config file, the operator's policy, the Search
resource, the kube section and the data spec.
"""
