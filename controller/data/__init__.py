"""The dataset: CIFAR-100's formats, the safe unpickler, fetching a source as the policy allows, and staging it once
per store. Everything here parses input nobody vouches for.
"""
