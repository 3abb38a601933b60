"""Where searches keep their records: the store interfaces (base), a local directory and memory, S3, a trial's grant,
and opening one from a URI.
"""
