"""The pure core of a search: the space, the TPE step and the early-stopping rules. No I/O, no cluster, cloud or ML
framework.
"""
